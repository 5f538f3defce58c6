"""Exchange-neutral market messages: the validated values a feed shard works with.

Exchange modules (e.g. `binance`) turn frames into these; the book and the codec consume them.
Prices and quantities are floats already checked finite and sane by `codec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

# A price level: (price, quantity). Quantity 0 removes the level in a diff.
Level = tuple[float, float]


class DepthDiff(NamedTuple):
    """One diff-depth event: every level change between update ids `first_id`..`final_id`.

    A NamedTuple, not a frozen dataclass like its siblings: it is built for every frame, and a
    frozen dataclass's __init__ (one object.__setattr__ per field) costs four times as much.
    """

    symbol: str
    first_id: int
    final_id: int
    event_time_ms: int
    recv_ns: int
    bids: list[Level]
    asks: list[Level]


@dataclass(frozen=True, slots=True)
class DepthSnapshot:
    """A full book at `last_update_id` (the REST depth response)."""

    symbol: str
    last_update_id: int
    recv_ns: int
    bids: list[Level]
    asks: list[Level]


@dataclass(frozen=True, slots=True)
class PartialDepth:
    """A top-N book pushed by the exchange (Binance `<symbol>@depth<N>`), no local book needed."""

    symbol: str
    last_update_id: int
    recv_ns: int
    bids: list[Level]
    asks: list[Level]


class Trade(NamedTuple):
    """A NamedTuple, as DepthDiff: built for every trade frame."""

    symbol: str
    trade_id: int
    price: float
    qty: float
    buyer_is_maker: bool
    trade_time_ms: int
    event_time_ms: int
    recv_ns: int


class BookTicker(NamedTuple):
    """Best bid/offer update (Binance `<symbol>@bookTicker`); a NamedTuple, as DepthDiff: the
    most frequent frame of all (~75 a second per symbol in the recordings)."""

    symbol: str
    update_id: int
    bid_px: float
    bid_qty: float
    ask_px: float
    ask_qty: float
    recv_ns: int


@dataclass(frozen=True, slots=True)
class Control:
    """A non-data frame: a subscription reply, an error reply or a server notice."""

    kind: str  # "result" | "error" | "server_shutdown"
    request_id: int | None
    detail: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A frame that failed validation; it goes to the quarantine topic, never to a book."""

    reason: str
    symbol: str | None
    stream: str | None
    recv_ns: int
    frame: bytes


Message = DepthDiff | DepthSnapshot | PartialDepth | Trade | BookTicker | Control | Rejected
