"""The routing table: symbol -> (shard, partition), the contract between operator and shards.

The operator (and `quantcore up`) plan it; feed shards read it from a ConfigMap or a file.
Rules (see DESIGN.md): a symbol's partition never changes while it stays in the feed, and
the partition count only grows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Route:
    symbol: str  # upper-case exchange symbol, e.g. "BTCUSDT"
    shard: int
    partition: int


@dataclass(frozen=True)
class RoutingTable:
    """An immutable snapshot of the table. `version` grows with every change."""

    partitions: int
    shards: int
    routes: tuple[Route, ...] = ()
    version: int = 0
    _by_symbol: Mapping[str, Route] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_symbol = {r.symbol: r for r in self.routes}
        if len(by_symbol) != len(self.routes):
            raise ValueError("routing table lists a symbol twice")
        for r in self.routes:
            if not 0 <= r.partition < self.partitions:
                raise ValueError(
                    f"{r.symbol}: partition {r.partition} outside 0..{self.partitions - 1}"
                )
            if not 0 <= r.shard < self.shards:
                raise ValueError(f"{r.symbol}: shard {r.shard} outside 0..{self.shards - 1}")
        object.__setattr__(self, "routes", tuple(sorted(self.routes)))
        object.__setattr__(self, "_by_symbol", by_symbol)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(r.symbol for r in self.routes)

    def route(self, symbol: str) -> Route:
        return self._by_symbol[symbol]

    def get(self, symbol: str) -> Route | None:
        return self._by_symbol.get(symbol)

    def partition_of(self, symbol: str) -> int:
        return self._by_symbol[symbol].partition

    def shard_symbols(self, shard: int) -> tuple[str, ...]:
        return tuple(r.symbol for r in self.routes if r.shard == shard)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "partitions": self.partitions,
                "shards": self.shards,
                "routes": {r.symbol: [r.shard, r.partition] for r in self.routes},
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> RoutingTable:
        doc = json.loads(text)
        return cls(
            partitions=int(doc["partitions"]),
            shards=int(doc["shards"]),
            version=int(doc.get("version", 0)),
            routes=tuple(
                Route(symbol, int(shard), int(partition))
                for symbol, (shard, partition) in doc["routes"].items()
            ),
        )

    @classmethod
    def of(
        cls, routes: Iterable[Route], *, partitions: int, shards: int, version: int = 0
    ) -> RoutingTable:
        return cls(partitions=partitions, shards=shards, routes=tuple(routes), version=version)


# The key under which the table is stored in the routing ConfigMap (and the file name in local mode).
CONFIGMAP_KEY = "routing.json"
