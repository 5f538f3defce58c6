"""Make-before-break handover of symbols between feed shards: which one-shard tables to apply now.

Pure: the reconcile reads the shard ConfigMaps and asks each shard which symbols it has live,
then applies what `step` returns. The rule (docs/architecture.md): a symbol that moves from
shard A to shard B is given to B at once, and A keeps it until B reports it live (book synced
and a record published); only then does A let go. Duplicates during the overlap are dropped
downstream (same partition, idempotent by exchange sequence), a gap would not be.

    >>> from quantcore.routing import Route, RoutingTable
    >>> final = RoutingTable.of([Route("BTCUSDT", 1, 0)], partitions=1, shards=2)
    >>> applied = {0: RoutingTable.of([Route("BTCUSDT", 0, 0)], partitions=1, shards=1)}
    >>> s = step(final, applied, live={}, since={}, now=NOW)  # B not live yet: both hold it
    >>> [t.symbols for t in s.tables.values()]
    [('BTCUSDT',), ('BTCUSDT',)]

Released without confirmation: symbols that left the feed (at once), and a move still pending
after `timeout` (the gaining shard unreachable or stuck must not hold the old one forever).
A shard above the final shard count keeps its table (and so its Deployment) while it holds a
symbol; once it holds none it is absent from `tables`, and the reconcile prunes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from quantcore.routing import Route, RoutingTable

# A ConfigMap edit reaches a pod's mounted file at the kubelet's next sync of the pod (a minute
# by default, plus its cache's TTL), then the shard connects and syncs: room for all of it.
DEFAULT_TIMEOUT = timedelta(seconds=300)
NOW = datetime(2024, 1, 1, tzinfo=UTC)  # for the doctest above


@dataclass(frozen=True, order=True)
class Move:
    """`symbol` is held by shard `source` until shard `target` reports it live."""

    symbol: str
    source: int
    target: int
    since: datetime  # when the reconcile first saw this move pending

    @property
    def key(self) -> tuple[str, int]:
        return (self.symbol, self.target)

    def describe(self) -> str:
        return f"{self.symbol} {self.source}->{self.target}"


@dataclass(frozen=True)
class Step:
    tables: dict[int, RoutingTable]  # shard -> the one-shard table to apply now
    pending: tuple[Move, ...]  # held by their old shard, waiting for the new one
    forced: tuple[Move, ...]  # released without the new shard reporting live (timeout)
    final_shards: int  # shards 0..final_shards-1 carry the final table

    @property
    def done(self) -> bool:
        return not self.pending

    @property
    def draining(self) -> tuple[int, ...]:
        """Shards above the final count, kept only while they hold a symbol moving away."""
        return tuple(i for i in self.tables if i >= self.final_shards)


def one_shard(routes: list[Route], partitions: int, shard: int) -> RoutingTable:
    """The same shape as planner.shard_table: the shard's routes, shards = shard + 1."""
    return RoutingTable.of(routes, partitions=partitions, shards=shard + 1)


def step(
    final: RoutingTable,
    applied: Mapping[int, RoutingTable],
    live: Mapping[int, frozenset[str]],
    since: Mapping[tuple[str, int], datetime],
    now: datetime,
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> Step:
    """The per-shard tables to apply now.

    `final` is the planned routing table; `applied` the one-shard table each shard's
    ConfigMap holds now (a shard without one is absent); `live` the symbols each shard that
    answered reports live (a shard that did not answer is absent); `since` when each pending
    move (symbol, target shard) was first seen, from the previous status.
    """
    shards = set(range(final.shards)) | set(applied)
    routes: dict[int, list[Route]] = {i: [] for i in shards}
    for r in final.routes:
        routes[r.shard].append(r)
    pending: list[Move] = []
    forced: list[Move] = []
    for source in sorted(applied):
        for symbol in applied[source].symbols:
            route = final.get(symbol)
            if route is None or route.shard == source:
                continue  # left the feed (released at once), or staying put
            if symbol in live.get(route.shard, frozenset()):
                continue  # the gaining shard serves it: let go
            move = Move(symbol, source, route.shard, since.get((symbol, route.shard), now))
            if now - move.since >= timeout:
                forced.append(move)
                continue
            pending.append(move)
            # Held under its final partition (a symbol's partition never changes anyway).
            routes[source].append(Route(symbol, source, route.partition))
    tables = {
        i: one_shard(routes[i], final.partitions, i)
        for i in sorted(shards)
        if i < final.shards or routes[i]
    }
    return Step(
        tables=tables,
        pending=tuple(sorted(pending)),
        forced=tuple(sorted(forced)),
        final_shards=final.shards,
    )
