"""Prometheus metrics of the operator (`quantcore operator --metrics-port`).

Per reconcile: its duration and outcome. Per MarketFeed (`marketfeed_namespace`, `marketfeed`:
as many label sets as there are feeds; not `namespace`, which a scrape sets to the operator's): its children by kind, the routing table's size, symbols moved between
shards by reshards, symbols a universe added or removed, and handovers released by timeout.
`routing_change` (pure) says what one reconcile changed.
"""

from __future__ import annotations

import contextlib
from collections import Counter as Tally
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from quantcore.routing import RoutingTable

OUTCOMES = ("ok", "retry", "error")

RECONCILE_SECONDS = Histogram(
    "quantcore_operator_reconcile_duration_seconds",
    "Time one reconcile of a MarketFeed took",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
RECONCILES = Counter(
    "quantcore_operator_reconciles_total",
    "Reconciles by outcome: ok, retry (a dependency unavailable), error (refused by the API)",
    ["outcome"],
)
CHILDREN = Gauge(
    "quantcore_operator_children",
    "Objects the operator keeps for a MarketFeed, by kind",
    ["marketfeed_namespace", "marketfeed", "kind"],
)
ROUTED_SYMBOLS = Gauge(
    "quantcore_operator_routed_symbols",
    "Symbols in the routing table",
    ["marketfeed_namespace", "marketfeed"],
)
SHARDS = Gauge(
    "quantcore_operator_shards", "Feed shards planned", ["marketfeed_namespace", "marketfeed"]
)
ROUTING_VERSION = Gauge(
    "quantcore_operator_routing_version",
    "Routing table version",
    ["marketfeed_namespace", "marketfeed"],
)
RESHARD_MOVES = Counter(
    "quantcore_operator_reshard_moves_total",
    "Symbols moved from one shard to another by a reshard",
    ["marketfeed_namespace", "marketfeed"],
)
UNIVERSE_CHANGES = Counter(
    "quantcore_operator_universe_changes_total",
    "Symbols that joined or left the routing table, by change (added, removed)",
    ["marketfeed_namespace", "marketfeed", "change"],
)
HANDOVER_TIMEOUTS = Counter(
    "quantcore_operator_handover_timeouts_total",
    "Symbols released without the gaining shard reporting them live",
    ["marketfeed_namespace", "marketfeed"],
)
for _outcome in OUTCOMES:
    RECONCILES.labels(_outcome)


@dataclass(frozen=True)
class RoutingChange:
    moved: tuple[str, ...] = ()  # symbols in both tables, on another shard after
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


NO_CHANGE = RoutingChange()


def routing_change(before: RoutingTable | None, after: RoutingTable) -> RoutingChange:
    """What going from `before` to `after` changed (a first table adds every symbol)."""
    old = {} if before is None else {r.symbol: r.shard for r in before.routes}
    new = {r.symbol: r.shard for r in after.routes}
    moved = tuple(sorted(s for s, shard in new.items() if s in old and old[s] != shard))
    return RoutingChange(
        moved, tuple(sorted(new.keys() - old.keys())), tuple(sorted(old.keys() - new.keys()))
    )


def children_by_kind(objects: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    return dict(Tally(str(o["kind"]) for o in objects))


def record_feed(
    namespace: str,
    name: str,
    table: RoutingTable,
    change: RoutingChange,
    children: Mapping[str, int],
    forced: int,
) -> None:
    """One successful reconcile's facts about one MarketFeed."""
    labels = (namespace, name)
    ROUTED_SYMBOLS.labels(*labels).set(len(table.routes))
    SHARDS.labels(*labels).set(table.shards)
    ROUTING_VERSION.labels(*labels).set(table.version)
    for kind, count in children.items():
        CHILDREN.labels(*labels, kind).set(count)
    RESHARD_MOVES.labels(*labels).inc(len(change.moved))
    UNIVERSE_CHANGES.labels(*labels, "added").inc(len(change.added))
    UNIVERSE_CHANGES.labels(*labels, "removed").inc(len(change.removed))
    HANDOVER_TIMEOUTS.labels(*labels).inc(forced)


def forget_feed(namespace: str, name: str) -> None:
    """A deleted MarketFeed's series go with it (label sets stay bounded by live feeds)."""
    labelled: list[tuple[Any, tuple[str, ...]]] = [
        (family, (namespace, name))
        for family in (ROUTED_SYMBOLS, SHARDS, ROUTING_VERSION, RESHARD_MOVES, HANDOVER_TIMEOUTS)
    ]
    labelled += [(UNIVERSE_CHANGES, (namespace, name, c)) for c in ("added", "removed")]
    labelled += [(CHILDREN, (namespace, name, k)) for k in _children_kinds(namespace, name)]
    for family, labels in labelled:
        with contextlib.suppress(KeyError):
            family.remove(*labels)


def _children_kinds(namespace: str, name: str) -> list[str]:
    return [
        sample.labels["kind"]
        for metric in CHILDREN.collect()
        for sample in metric.samples
        if sample.labels["marketfeed_namespace"] == namespace
        and sample.labels["marketfeed"] == name
    ]
