"""The local order book and its sync state machine (Binance's documented procedure), no I/O.

`BookSync` buffers diffs until a snapshot arrives, drops what the snapshot already covers,
requires the first applied diff to straddle the snapshot, then `U == previous u + 1`. A gap or
a crossed book sends that one symbol back to BUFFERING, asking its owner for a new snapshot.
"""

from __future__ import annotations

import enum
import heapq
import math
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass
from operator import itemgetter, neg
from typing import TYPE_CHECKING, NamedTuple

from quantcore.feed.messages import DepthDiff, DepthSnapshot, Level

# (bid_px, bid_qty, ask_px, ask_qty); a side with no levels reads as None.
TopOfBook = tuple[float | None, float | None, float | None, float | None]


class PythonOrderBook:
    """Price levels of both sides, the best ones kept sorted so the top N is a slice, not a sort.

    The reference implementation: `OrderBook` below is its compiled twin (_orderbook.c, the
    same algorithm) when the build compiled it, and this class otherwise.

    Each side is a dict (price -> quantity) holding every level, plus a sorted key list holding
    only the levels at or better than a floor: most changes land deeper than any top N anyone
    reads, and those cost a dict operation, not a list insert or delete. The list keeps between
    `min_sorted` and 2 x `window` levels: it is trimmed from the far end when it grows past that
    and refilled from the dict (a partial sort) in the rare case too few remain.

    Key lists are ascending with the BEST price LAST (bids keyed by price, asks by negated
    price): most changes land near the top, and list inserts there move few elements.
    """

    __slots__ = (
        "_ask_floor",
        "_ask_keys",
        "_asks",
        "_bid_floor",
        "_bid_keys",
        "_bids",
        "_min_sorted",
        "_window",
    )

    def __init__(self, *, window: int = 256, min_sorted: int = 20) -> None:
        self._bids: dict[float, float] = {}
        self._asks: dict[float, float] = {}
        self._bid_keys: list[float] = []
        self._ask_keys: list[float] = []
        # Every level with key >= floor is in the key list (-inf: the whole side is).
        self._bid_floor = -math.inf
        self._ask_floor = -math.inf
        self._window = max(window, 1)
        self._min_sorted = max(min_sorted, 1)  # so a non-empty side has its best level sorted

    def clear(self) -> None:
        self._bids.clear()
        self._asks.clear()
        self._bid_keys.clear()
        self._ask_keys.clear()
        self._bid_floor = self._ask_floor = -math.inf

    def load(self, bids: list[Level], asks: list[Level]) -> None:
        self.clear()
        self.update(bids, asks)

    def update(self, bids: list[Level], asks: list[Level]) -> None:
        if bids:
            _apply_bids(self._bids, self._bid_keys, bids, self._bid_floor)
            keys = self._bid_keys
            if len(keys) > 2 * self._window or (
                len(keys) < self._min_sorted and self._bid_floor != -math.inf
            ):
                self._sort_bids(self._window)
        if asks:
            _apply_asks(self._asks, self._ask_keys, asks, -self._ask_floor)
            keys = self._ask_keys
            if len(keys) > 2 * self._window or (
                len(keys) < self._min_sorted and self._ask_floor != -math.inf
            ):
                self._sort_asks(self._window)

    def _sort_bids(self, n: int) -> None:
        """Keep exactly the best `n` bids sorted (all of them if there are no more)."""
        side = self._bids
        self._bid_keys[:] = sorted(heapq.nlargest(n, side)) if len(side) > n else sorted(side)
        self._bid_floor = self._bid_keys[0] if len(side) > n else -math.inf

    def _sort_asks(self, n: int) -> None:
        side = self._asks
        best = heapq.nsmallest(n, side) if len(side) > n else side
        self._ask_keys[:] = sorted(map(neg, best))
        self._ask_floor = self._ask_keys[0] if len(side) > n else -math.inf

    def apply(
        self, bids: list[Level], asks: list[Level], n: int
    ) -> tuple[list[float], list[float], list[float], list[float]] | None:
        """`update`, then the best `n` levels of each side (bid_px, bid_qty, ask_px, ask_qty);
        None if the book crossed (it is left as the update made it)."""
        self.update(bids, asks)
        if self.crossed():
            return None
        return (*self.bids(n), *self.asks(n))

    def crossed(self) -> bool:
        return bool(self._bid_keys and self._ask_keys) and self._bid_keys[-1] >= -self._ask_keys[-1]

    def top_of_book(self) -> TopOfBook:
        bid = self._bid_keys[-1] if self._bid_keys else None
        ask = -self._ask_keys[-1] if self._ask_keys else None
        return (
            bid,
            self._bids[bid] if bid is not None else None,
            ask,
            self._asks[ask] if ask is not None else None,
        )

    def bids(self, n: int) -> tuple[list[float], list[float]]:
        if n > len(self._bid_keys) and self._bid_floor != -math.inf:
            self._sort_bids(max(n, self._window))
        px = self._bid_keys[: -n - 1 : -1]  # the last n, best first
        return px, _quantities(self._bids, px)

    def asks(self, n: int) -> tuple[list[float], list[float]]:
        if n > len(self._ask_keys) and self._ask_floor != -math.inf:
            self._sort_asks(max(n, self._window))
        px = list(map(neg, self._ask_keys[: -n - 1 : -1]))
        return px, _quantities(self._asks, px)

    def depth(self) -> tuple[int, int]:
        return len(self._bids), len(self._asks)


if TYPE_CHECKING:
    OrderBook = PythonOrderBook
else:
    try:  # hatch_build.py builds it; test_native.py holds the two to the same results
        from quantcore.feed._orderbook import OrderBook
    except ImportError:
        OrderBook = PythonOrderBook


def _quantities(side: dict[float, float], prices: list[float]) -> list[float]:
    if len(prices) > 1:
        return list(itemgetter(*prices)(side))  # one C call (a lone key would not give a tuple)
    return [side[p] for p in prices]


def _apply_bids(
    side: dict[float, float], keys: list[float], levels: list[Level], floor: float
) -> None:
    pop = side.pop
    for price, qty in levels:
        if qty:
            if price >= floor and price not in side:
                insort(keys, price)
            side[price] = qty
        elif pop(price, None) is not None and price >= floor:
            del keys[bisect_left(keys, price)]


def _apply_asks(
    side: dict[float, float], keys: list[float], levels: list[Level], ceiling: float
) -> None:
    pop = side.pop
    for price, qty in levels:
        if qty:
            if price <= ceiling and price not in side:
                insort(keys, -price)
            side[price] = qty
        elif pop(price, None) is not None and price <= ceiling:
            del keys[bisect_left(keys, -price)]


class SyncState(enum.Enum):
    BUFFERING = "buffering"  # waiting for a snapshot; diffs are kept in a bounded buffer
    SYNCING = "syncing"  # snapshot loaded; waiting for the diff that straddles it
    LIVE = "live"


class Outcome(enum.Enum):
    BUFFERED = "buffered"
    DROPPED = "dropped"  # already covered by the snapshot or a duplicate of an applied diff
    APPLIED = "applied"
    GAP = "gap"  # a missing update id: resync
    CROSSED = "crossed"  # best bid >= best ask after an update: resync
    SNAPSHOT_STALE = "snapshot_stale"  # snapshot older than the buffered diffs: fetch again
    SNAPSHOT_LOADED = "snapshot_loaded"


# BookUpdate and Step are NamedTuples (immutable like a frozen dataclass, built in a quarter of
# the time): one of each is made for every applied diff.
class BookUpdate(NamedTuple):
    """The top-N book right after one applied diff, with the top of book before it."""

    diff: DepthDiff
    bid_px: list[float]
    bid_qty: list[float]
    ask_px: list[float]
    ask_qty: list[float]
    prev_top: TopOfBook | None  # None on the first update after a (re)sync


class Step(NamedTuple):
    outcome: Outcome
    updates: tuple[BookUpdate, ...] = ()


@dataclass
class SyncCounters:
    applied: int = 0
    dropped: int = 0
    gaps: int = 0
    crossed: int = 0
    stale_snapshots: int = 0
    resyncs: int = 0
    buffer_overflows: int = 0


class BookSync:
    """One symbol's local book and where it stands in the sync procedure.

    The owner feeds it diffs (`on_diff`) and snapshots (`on_snapshot`); whenever `wants_snapshot`
    is true it should fetch one. Every applied diff yields a `BookUpdate` to publish.
    """

    def __init__(self, symbol: str, *, levels: int = 20, max_buffer: int = 10_000) -> None:
        self.symbol = symbol
        self.levels = levels
        self.book = OrderBook(min_sorted=levels)
        self.state = SyncState.BUFFERING
        self.counters = SyncCounters()
        self.last_update_id: int | None = None  # the last applied `u` (or the snapshot's id)
        # Consecutive failed sync attempts: the owner backs off on it; reset once LIVE.
        self.attempts = 0
        self._buffer: deque[DepthDiff] = deque(maxlen=max_buffer)
        self._fresh = True  # next update is the first after a (re)sync

    @property
    def wants_snapshot(self) -> bool:
        return self.state is SyncState.BUFFERING

    def reset(self) -> None:
        """Forget the book and start over (e.g. after a reconnect lost frames)."""
        self._resync()
        self._buffer.clear()

    def on_diff(self, diff: DepthDiff) -> Step:
        state = self.state
        if state is SyncState.LIVE:
            last = self.last_update_id
            assert last is not None
            if diff.first_id == last + 1:
                return self._apply(diff)
            if diff.final_id <= last:
                self.counters.dropped += 1
                return Step(Outcome.DROPPED)
            # A missing id (or an overlap that disagrees with what we applied): rebuild.
            self.counters.gaps += 1
            self._resync()
            self._buffer.append(diff)
            return Step(Outcome.GAP)
        if state is SyncState.BUFFERING:
            if len(self._buffer) == self._buffer.maxlen:
                self.counters.buffer_overflows += 1
            self._buffer.append(diff)
            return Step(Outcome.BUFFERED)
        return self._straddle(diff)

    def on_snapshot(self, snapshot: DepthSnapshot) -> Step:
        """Load a snapshot and replay the buffered diffs over it."""
        if self.state is not SyncState.BUFFERING:
            return Step(Outcome.DROPPED)  # a late answer to a request we no longer need
        if self._buffer and snapshot.last_update_id + 1 < self._buffer[0].first_id:
            # Older than everything buffered: the diffs in between are lost to us.
            self.counters.stale_snapshots += 1
            self.attempts += 1
            return Step(Outcome.SNAPSHOT_STALE)
        self.book.load(snapshot.bids, snapshot.asks)
        if self.book.crossed():
            self.counters.crossed += 1
            self.attempts += 1
            self.book.clear()
            return Step(Outcome.CROSSED)
        self.last_update_id = snapshot.last_update_id
        self.state = SyncState.SYNCING
        self._fresh = True
        updates: list[BookUpdate] = []
        outcome = Outcome.SNAPSHOT_LOADED
        buffered = list(self._buffer)
        self._buffer.clear()
        for i, diff in enumerate(buffered):
            step = self.on_diff(diff)
            updates.extend(step.updates)
            if self.state is SyncState.BUFFERING:
                # Resync inside the replay: keep the rest buffered for the next snapshot.
                outcome = step.outcome
                for rest in buffered[i + 1 :]:
                    self._buffer.append(rest)
                break
        return Step(outcome, tuple(updates))

    def _straddle(self, diff: DepthDiff) -> Step:
        last = self.last_update_id
        assert last is not None
        if diff.final_id <= last:
            self.counters.dropped += 1
            return Step(Outcome.DROPPED)
        if diff.first_id <= last + 1:
            return self._apply(diff)
        # The snapshot is older than the first diff we have: fetch a newer one.
        self.counters.stale_snapshots += 1
        self.attempts += 1
        self.state = SyncState.BUFFERING
        self.book.clear()
        self._buffer.append(diff)
        return Step(Outcome.SNAPSHOT_STALE)

    def _apply(self, diff: DepthDiff) -> Step:
        book = self.book
        prev = None if self._fresh else book.top_of_book()
        top = book.apply(diff.bids, diff.asks, self.levels)
        if top is None:
            self.counters.crossed += 1
            self._resync()
            return Step(Outcome.CROSSED)
        self.last_update_id = diff.final_id
        self.state = SyncState.LIVE
        self._fresh = False
        self.attempts = 0
        self.counters.applied += 1
        bid_px, bid_qty, ask_px, ask_qty = top
        return Step(Outcome.APPLIED, (BookUpdate(diff, bid_px, bid_qty, ask_px, ask_qty, prev),))

    def _resync(self) -> None:
        self.counters.resyncs += 1
        self.attempts += 1
        self.state = SyncState.BUFFERING
        self.book.clear()
        self.last_update_id = None
        self._fresh = True
