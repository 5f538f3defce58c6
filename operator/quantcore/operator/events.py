"""Kubernetes Events the operator posts on a MarketFeed when its routing changes (pure).

`kubectl describe marketfeed` then tells a reshard (symbols moved between shards) and a
change of the symbol set (a universe refresh, or an edited list) without reading the
operator's log. Failures have their own Events (handlers: Degraded reasons, API errors,
handover timeouts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from quantcore.operator.metrics import RoutingChange
from quantcore.routing import RoutingTable

MESSAGE_LIMIT = 1000  # the API server's limit is larger; a screenful is enough
NAMES_SHOWN = 20


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


def _names(symbols: Sequence[str]) -> str:
    shown = ", ".join(symbols[:NAMES_SHOWN])
    more = len(symbols) - NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def routing_events(change: RoutingChange, table: RoutingTable, *, universe: bool) -> list[Event]:
    """The Events one reconcile's routing change deserves (none when nothing changed)."""
    events: list[Event] = []
    where = f"routing v{table.version}: {len(table.routes)} symbols on {table.shards} shard(s)"
    if change.added or change.removed:
        parts = []
        if change.added:
            parts.append(f"added {len(change.added)} ({_names(change.added)})")
        if change.removed:
            parts.append(f"removed {len(change.removed)} ({_names(change.removed)})")
        reason = "UniverseChanged" if universe else "SymbolsChanged"
        events.append(Event("Normal", reason, f"{'; '.join(parts)}; {where}"[:MESSAGE_LIMIT]))
    if change.moved:
        message = (
            f"moved {len(change.moved)} symbol(s) between shards ({_names(change.moved)}); {where}"
        )
        events.append(Event("Normal", "Resharded", message[:MESSAGE_LIMIT]))
    return events
