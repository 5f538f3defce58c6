"""Pacing of trade-flow records: at most one per symbol per `min_gap_ns` of local time.

A record per trade is too many: the recordings hold bursts of 700 trades in 100 ms, and
every record crosses Kafka, Spark, the relay, Redis and the serving tier, so a burst on a
few symbols queued every book update behind it for up to a second. A client only wants a
symbol's latest trade flow (serving conflates to the latest anyway), so the shard conflates
first: the first record after a quiet gap goes out at once, later ones within the gap
replace each other, and the newest is released when the gap ends. Every record sent is
exact as of its own time; only values a newer one superseded are skipped.

Pure: the caller passes the monotonic time and publishes what it gets back.
"""

from __future__ import annotations

from typing import Generic, TypeVar

# 10 ms adds at most 10 ms to a record inside a burst and cuts the recordings' trade-flow
# records about threefold on average and a hundredfold in their worst bursts.
MIN_GAP_NS = 10_000_000

T = TypeVar("T")


class Pacer(Generic[T]):
    """Per-key pacing of items; items of one key must be offered oldest first."""

    def __init__(self, min_gap_ns: int = MIN_GAP_NS) -> None:
        self.min_gap_ns = min_gap_ns
        self._sent_at: dict[str, int] = {}
        self._held: dict[str, tuple[int, T]] = {}  # key -> (release time, newest item)

    def offer(self, key: str, item: T, now_ns: int) -> T | None:
        """`item` if it may go out now; else None (held until its key's gap ends)."""
        sent = self._sent_at.get(key)
        if sent is None or now_ns - sent >= self.min_gap_ns:
            self._held.pop(key, None)  # superseded by `item`
            self._sent_at[key] = now_ns
            return item
        self._held[key] = (sent + self.min_gap_ns, item)
        return None

    def due(self, now_ns: int) -> list[T]:
        """The held items whose gap has ended, released (in key order of holding)."""
        if not self._held:
            return []
        ready = [key for key, (at, _) in self._held.items() if at <= now_ns]
        out: list[T] = []
        for key in ready:
            _, item = self._held.pop(key)
            self._sent_at[key] = now_ns
            out.append(item)
        return out

    def next_release_ns(self) -> int | None:
        """When the earliest held item may go out; None: nothing held."""
        return min((at for at, _ in self._held.values()), default=None)

    def forget(self, key: str) -> None:
        self._sent_at.pop(key, None)
        self._held.pop(key, None)
