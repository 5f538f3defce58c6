"""A background listener on the signal store's update channels: every published SignalUpdate,
in arrival order, with the wall-clock time it arrived (tests check them, benchmarks time them).
"""

from __future__ import annotations

import threading
import time

import redis

from quantcore import signalstore
from quantcore.v1 import signals_pb2


class UpdateListener:
    """Pattern-subscribes to every symbol's updates on a thread of its own until close()."""

    def __init__(self, url: str, poll_s: float = 0.5) -> None:
        # (receive time in ns since the epoch, update), appended by the listening thread.
        self.received: list[tuple[int, signals_pb2.SignalUpdate]] = []
        self._poll_s = poll_s  # how long close() may wait for the thread to notice
        self._pubsub = redis.Redis.from_url(url).pubsub()
        self._pubsub.psubscribe(signalstore.UPDATES_PATTERN)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def updates(self) -> list[signals_pb2.SignalUpdate]:
        return [update for _, update in self.received]

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._pubsub.get_message(timeout=self._poll_s)
            if msg is None or msg["type"] != "pmessage":
                continue
            now = time.time_ns()
            self.received.append((now, signals_pb2.SignalUpdate.FromString(msg["data"])))

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._pubsub.close()
