"""A gRPC subscriber on a thread of its own that records every update it receives with its
arrival time, so a test can wait for updates and measure the gaps between them while it
changes the cluster underneath (reshards, pod kills).

It uses the project's own client (quantcore.client.stream), which reconnects and never yields
a value older than one it already yielded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from quantcore.client.security import ClientCredentials
from quantcore.client.stream import MarketDataClient, Subscription
from quantcore.v1 import signals_pb2


@dataclass(frozen=True)
class Arrival:
    at: float  # time.monotonic() when the update reached the client
    update: signals_pb2.SignalUpdate

    @property
    def kind(self) -> str:
        return self.update.WhichOneof("body") or ""


class SignalRecorder:
    """Subscribes to `target` until close(); `arrivals` grows as updates come in."""

    def __init__(
        self,
        target: str,
        subscription: Subscription | None = None,
        credentials: ClientCredentials | None = None,
    ) -> None:
        self.target = target
        self.credentials = credentials or ClientCredentials()
        self.arrivals: list[Arrival] = []
        self._client = MarketDataClient(
            target, subscription or Subscription(), credentials=self.credentials
        )
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def connects(self) -> int:
        return self._client.stats.connects

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(self._receive())
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)

    async def _receive(self) -> None:
        async for update in self._client.updates():
            self.arrivals.append(Arrival(time.monotonic(), update))

    def close(self) -> None:
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)

    # ---- reading --------------------------------------------------------------------------

    def since(self, start: float, kind: str = "book") -> list[Arrival]:
        return [a for a in list(self.arrivals) if a.at >= start and a.kind == kind]

    def symbols(self, start: float, kind: str = "book") -> set[str]:
        return {a.update.symbol for a in self.since(start, kind)}

    def wait_until(
        self, done: Callable[[], bool], what: str, timeout: float, poll: float = 0.2
    ) -> float:
        """Seconds until `done()` held; fails naming `what` after `timeout`."""
        started = time.monotonic()
        while not done():
            if time.monotonic() - started > timeout:
                raise AssertionError(
                    f"timed out after {timeout:.0f}s waiting for {what} "
                    f"({len(self.arrivals)} updates so far, {self.connects} connects, "
                    f"last error {self._client.stats.last_error})"
                )
            time.sleep(poll)
        return time.monotonic() - started


def longest_gap(arrivals: list[Arrival], symbol: str, start: float, end: float) -> float:
    """The longest time within [start, end] during which `symbol` got no update: between
    consecutive arrivals, and from `start` to the first and the last to `end`."""
    times = [a.at for a in arrivals if a.update.symbol == symbol and start <= a.at <= end]
    edges = [start, *times, end]
    return max(b - a for a, b in itertools.pairwise(edges))
