"""A small async MarketData client: subscribe, reconnect, never go backwards.

Every (re)connect subscribes again, so the server sends a fresh snapshot first; the client
drops any update whose sequence is not above the last one it yielded for that
(symbol, kind), so a reconnect (to the same or another server) never moves a value back.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import grpc

from quantcore.client.security import ClientCredentials
from quantcore.v1 import marketdata_pb2, marketdata_pb2_grpc, signals_pb2

log = logging.getLogger(__name__)

# The server's fault, or the network's: worth reconnecting. Anything else is the caller's.
_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
}

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


@dataclass(frozen=True)
class Subscription:
    symbols: tuple[str, ...] = ()  # empty: every symbol
    kinds: tuple[str, ...] = ()  # empty: book and trades
    fields: tuple[str, ...] = ()  # empty: every field
    min_interval_ms: int = 0

    def request(self) -> marketdata_pb2.SubscribeRequest:
        req = marketdata_pb2.SubscribeRequest(
            symbols=list(self.symbols),
            kinds=list(self.kinds),
            min_interval_ms=self.min_interval_ms,
        )
        req.fields.paths.extend(self.fields)
        return req


@dataclass
class ClientStats:
    connects: int = 0
    received: int = 0
    dropped_stale: int = 0  # updates at or below a sequence already yielded
    last_error: str | None = None


@dataclass
class MarketDataClient:
    """`async for update in client.updates(): ...` — runs until cancelled."""

    target: str
    subscription: Subscription = field(default_factory=Subscription)
    credentials: ClientCredentials = field(default_factory=ClientCredentials)
    max_backoff_s: float = 2.0
    on_state: Callable[[str], None] = lambda state: None
    stats: ClientStats = field(default_factory=ClientStats)
    _last_seq: dict[tuple[str, str], int] = field(default_factory=dict)

    def last_sequence(self, symbol: str, kind: str) -> int | None:
        return self._last_seq.get((symbol, kind))

    async def updates(self) -> AsyncIterator[signals_pb2.SignalUpdate]:
        attempt = 0
        while True:
            self.on_state("connecting")
            try:
                async with self.credentials.channel(self.target, CHANNEL_OPTIONS) as ch:
                    call = marketdata_pb2_grpc.MarketDataStub(ch).Subscribe(
                        self.subscription.request(), metadata=self.credentials.metadata()
                    )
                    self.stats.connects += 1
                    async for update in flatten(call):
                        if attempt:
                            attempt = 0
                        if not self._advance(update):
                            continue
                        self.on_state("live")
                        yield update
                    self.stats.last_error = "stream ended"
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _RETRYABLE:
                    raise
                self.stats.last_error = f"{exc.code().name}: {exc.details()}"
                log.info("stream to %s broke (%s); reconnecting", self.target, exc.code().name)
            attempt += 1
            self.on_state(f"reconnecting ({self.stats.last_error})")
            delay = min(self.max_backoff_s, 0.1 * 2 ** min(attempt, 10))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def _advance(self, update: signals_pb2.SignalUpdate) -> bool:
        self.stats.received += 1
        key = (update.symbol, update.WhichOneof("body") or "")
        if update.sequence <= self._last_seq.get(key, -1):
            self.stats.dropped_stale += 1
            return False
        self._last_seq[key] = update.sequence
        return True


async def flatten(
    call: AsyncIterator[marketdata_pb2.UpdateBatch],
) -> AsyncIterator[signals_pb2.SignalUpdate]:
    """The updates of a Subscribe call, one by one (the server sends them in batches)."""
    async for batch in call:
        for update in batch.updates:
            yield update


async def snapshot(
    target: str,
    symbols: Sequence[str] = (),
    deadline_s: float = 5.0,
    credentials: ClientCredentials | None = None,
) -> list[signals_pb2.SignalUpdate]:
    """One GetSnapshot call."""
    creds = credentials or ClientCredentials()
    async with creds.channel(target, CHANNEL_OPTIONS) as ch:
        reply = await marketdata_pb2_grpc.MarketDataStub(ch).GetSnapshot(
            marketdata_pb2.SnapshotRequest(symbols=list(symbols)),
            timeout=deadline_s,
            metadata=creds.metadata(),
        )
    return list(reply.updates)
