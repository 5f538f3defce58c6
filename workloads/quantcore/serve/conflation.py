"""A per-client queue that keeps only the latest update per (symbol, kind).

Its size is bounded by the number of keys a client subscribed to, whatever the client's
reading speed: a slow reader gets the newest value, never a backlog. It also enforces
the stream's ordering rule: a key's sequence only grows, so a snapshot entry and a live
entry for the same update (the snapshot-then-stream seam) are delivered once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from quantcore.serve.encoding import receive_stamp

Key = tuple[str, str]  # (symbol, kind)


@dataclass(frozen=True, slots=True)
class Update:
    """One encoded SignalUpdate as it travels from Redis to a client."""

    symbol: str
    kind: str
    sequence: int
    payload: bytes  # the SignalUpdate bytes as the sink wrote them
    server_receive_ns: int
    key: Key = field(init=False, repr=False, compare=False)
    receive_stamp: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built once per update, not once per client it is offered to.
        object.__setattr__(self, "key", (self.symbol, self.kind))
        object.__setattr__(self, "receive_stamp", receive_stamp(self.server_receive_ns))


class QueueClosed(Exception):
    """The queue was closed (client gone or server shutting down)."""


class ConflatingQueue:
    """Latest-value-per-key queue for one consumer, fed synchronously by the fan-out."""

    def __init__(self, min_interval_ns: int = 0) -> None:
        self._min_interval_ns = min_interval_ns
        # dict keeps first-arrival order, so a busy key cannot starve a quiet one.
        self._pending: dict[Key, Update] = {}
        self._delivered_seq: dict[Key, int] = {}
        self._last_sent_ns: dict[Key, int] = {}
        self._wakeup = asyncio.Event()
        self._closed: str | None = None
        self.conflated = 0  # updates replaced before the consumer read them
        self.stale = 0  # updates refused because their sequence did not grow

    def __len__(self) -> int:
        return len(self._pending)

    def offer(self, update: Update) -> bool:
        """Queue `update` unless a newer or equal sequence for its key was seen. Never blocks."""
        key = update.key
        if update.sequence <= self._delivered_seq.get(key, -1):
            self.stale += 1
            return False
        pending = self._pending.get(key)
        if pending is not None:
            if update.sequence <= pending.sequence:
                self.stale += 1
                return False
            self.conflated += 1
        self._pending[key] = update
        self._wakeup.set()
        return True

    def discard(self, symbols: frozenset[str]) -> int:
        """Drop the pending updates of `symbols` (no longer served); how many were dropped."""
        gone = [key for key in self._pending if key[0] in symbols]
        for key in gone:
            del self._pending[key]
        return len(gone)

    def close(self, reason: str) -> None:
        if self._closed is None:
            self._closed = reason
        self._wakeup.set()

    @property
    def closed(self) -> str | None:
        return self._closed

    async def get(self) -> Update:
        """The next deliverable update, oldest key first; waits while none is due."""
        while True:
            if self._closed is not None:
                raise QueueClosed(self._closed)
            update, wait_ns = self._take_due(time.monotonic_ns())
            if update is not None:
                return update
            self._wakeup.clear()
            timeout = None if wait_ns is None else wait_ns / 1e9
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def get_many(self, limit: int) -> list[Update]:
        """The next due update and every other one due now, up to `limit`: one write for
        what piled up while the client was busy."""
        batch = [await self.get()]
        now = time.monotonic_ns()
        while len(batch) < limit:
            update, _ = self._take_due(now)
            if update is None:
                break
            batch.append(update)
        return batch

    def _take_due(self, now_ns: int) -> tuple[Update | None, int | None]:
        """Pop the first update whose key may be sent now; else how long until one may."""
        soonest: int | None = None
        for key, update in self._pending.items():
            due = self._last_sent_ns.get(key, 0) + self._min_interval_ns
            if self._min_interval_ns == 0 or due <= now_ns:
                del self._pending[key]
                self._delivered_seq[key] = update.sequence
                if self._min_interval_ns:
                    self._last_sent_ns[key] = now_ns
                return update, None
            soonest = due - now_ns if soonest is None else min(soonest, due - now_ns)
        return None, soonest
