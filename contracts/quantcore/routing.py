"""The routing table: symbol -> (shard, partition), the contract between operator and shards.

The operator (and `quantcore up`) plan it; feed shards read it from a ConfigMap or a file.
Rules (docs/architecture.md): a symbol's partition never changes while it stays in the feed, and
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


def shards_for(symbol_count: int, symbols_per_shard: int) -> int:
    """How many feed shards carry `symbol_count` symbols (always at least one)."""
    if symbols_per_shard < 1:
        raise ValueError("symbols_per_shard must be at least 1")
    return max(1, -(-symbol_count // symbols_per_shard))


def rebalance(
    table: RoutingTable | None,
    symbols: Iterable[str],
    symbols_per_shard: int,
    min_partitions: int,
) -> RoutingTable:
    """The next table for `symbols`, moving as few symbols between shards as possible.

    Kept symbols keep their partition; the partition count only grows (to `min_partitions`);
    new symbols go to the least-loaded partition and shard; shards above the new shard count
    are drained; afterwards shard loads differ by at most one. Pure and deterministic: the
    same inputs give the same table, and an unchanged input keeps the same version.
    """
    old = table or RoutingTable(partitions=0, shards=0)
    wanted = sorted(set(symbols))
    partitions = max(old.partitions, min_partitions, 1)
    shards = shards_for(len(wanted), symbols_per_shard)

    kept = {s: old.route(s) for s in wanted if old.get(s) is not None}
    # Shard targets: n // k each, one extra for n % k shards. The extras go to the shards
    # that already hold the most kept symbols, which is what makes the move count minimal.
    kept_on: dict[int, list[str]] = {i: [] for i in range(shards)}
    homeless: list[str] = [s for s in wanted if s not in kept]
    for symbol, route in sorted(kept.items()):
        if route.shard < shards:
            kept_on[route.shard].append(symbol)
        else:
            homeless.append(symbol)  # its shard is being drained
    base, extra = divmod(len(wanted), shards)
    by_kept = sorted(range(shards), key=lambda i: (-len(kept_on[i]), i))
    target = {i: base + (1 if rank < extra else 0) for rank, i in enumerate(by_kept)}
    shard_of: dict[str, int] = {}
    for i in range(shards):
        stay = kept_on[i][: target[i]]
        homeless.extend(kept_on[i][target[i] :])
        shard_of.update(dict.fromkeys(stay, i))
    load = {i: min(len(kept_on[i]), target[i]) for i in range(shards)}
    for symbol in sorted(homeless):
        free = [i for i in range(shards) if load[i] < target[i]]
        dest = min(free, key=lambda i: (load[i], i))
        shard_of[symbol] = dest
        load[dest] += 1

    # Partitions: never re-key a kept symbol; fill the least-loaded partitions with new ones.
    partition_of = {s: r.partition for s, r in kept.items()}
    part_load = [0] * partitions
    for p in partition_of.values():
        part_load[p] += 1
    for symbol in wanted:
        if symbol not in partition_of:
            p = min(range(partitions), key=lambda i: (part_load[i], i))
            partition_of[symbol] = p
            part_load[p] += 1

    routes = tuple(Route(s, shard_of[s], partition_of[s]) for s in wanted)
    same = routes == old.routes and partitions == old.partitions and shards == old.shards
    version = old.version if same and table is not None else old.version + 1
    return RoutingTable(partitions=partitions, shards=shards, routes=routes, version=version)
