"""One Redis pattern subscription, fanned out to every client's conflating queue.

The fan-out never waits on a client: offering to a queue is synchronous and bounded, so a
slow client cannot slow the others. When the pub/sub link drops, updates published in
the meantime are lost to it, so on every reconnect it re-reads the stored values of the
symbols clients follow (the queues drop what they already delivered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from google.protobuf.message import DecodeError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from quantcore import signalstore
from quantcore.redisauth import RedisAuth
from quantcore.serve import metrics
from quantcore.serve.conflation import ConflatingQueue, Update
from quantcore.serve.served import ServedSymbols
from quantcore.serve.snapshot import read_latest
from quantcore.v1 import signals_pb2

log = logging.getLogger(__name__)

_CHANNEL_PREFIX = signalstore.channel("")


@dataclass(eq=False)
class Subscription:
    """What one client follows and the queue it reads from."""

    symbols: frozenset[str] | None  # None: every symbol
    kinds: frozenset[str]
    queue: ConflatingQueue = field(default_factory=ConflatingQueue)


def parse_update(channel: bytes | str, data: bytes, receive_ns: int) -> Update:
    """Read the routing facts (symbol, kind, sequence) of one published SignalUpdate."""
    msg = signals_pb2.SignalUpdate.FromString(data)
    kind = msg.WhichOneof("body")
    if kind is None or not msg.symbol:
        raise ValueError("SignalUpdate without a symbol or a body")
    name = channel.decode() if isinstance(channel, bytes) else channel
    if name != _CHANNEL_PREFIX + msg.symbol:
        raise ValueError(f"update for {msg.symbol} published on {name}")
    # The hops as they reached us (the server's own stamps are added on the way out).
    msg.hops.server_receive_ns = receive_ns
    metrics.observe_latency(msg.hops, kind)
    return Update(msg.symbol, kind, msg.sequence, data, receive_ns)


def _discard(index: dict[Any, set[Subscription]], key: object, sub: Subscription) -> None:
    group = index.get(key)
    if group is not None:
        group.discard(sub)
        if not group:
            del index[key]


class Fanout:
    def __init__(
        self,
        redis_url: str,
        *,
        auth: RedisAuth | None = None,
        on_link_change: Callable[[bool], None] = lambda up: None,
        max_backoff_s: float = 2.0,
        served: ServedSymbols | None = None,
    ) -> None:
        self._redis_url = redis_url
        self._auth = auth or RedisAuth()
        self._served = served or ServedSymbols(routed=False)
        # Indexed by (symbol, kind) so dispatch touches only the queues that want an update.
        self._by_key: dict[tuple[str, str], set[Subscription]] = {}
        self._everything: dict[str, set[Subscription]] = {}  # kind -> wildcard subscribers
        self._on_link_change = on_link_change
        self._max_backoff_s = max_backoff_s
        self.connected = asyncio.Event()

    # --- clients -------------------------------------------------------------
    def attach(self, sub: Subscription) -> None:
        """Start offering updates to `sub` (before its snapshot is read: no gap at the seam)."""
        for kind in sub.kinds:
            if sub.symbols is None:
                self._everything.setdefault(kind, set()).add(sub)
            else:
                for symbol in sub.symbols:
                    self._by_key.setdefault((symbol, kind), set()).add(sub)

    def detach(self, sub: Subscription) -> None:
        for kind in sub.kinds:
            if sub.symbols is None:
                _discard(self._everything, kind, sub)
            else:
                for symbol in sub.symbols:
                    _discard(self._by_key, (symbol, kind), sub)

    def forget(self, symbols: frozenset[str]) -> None:
        """Symbols no longer served: drop what is queued for them, so none is sent after."""
        if symbols:
            for sub in self._subscriptions():
                sub.queue.discard(symbols)

    def close_all(self, reason: str) -> None:
        for sub in self._subscriptions():
            sub.queue.close(reason)

    def _subscriptions(self) -> set[Subscription]:
        subs: set[Subscription] = set()
        for group in (*self._by_key.values(), *self._everything.values()):
            subs |= group
        return subs

    def _followed_symbols(self) -> set[str]:
        return {symbol for (symbol, _), subs in self._by_key.items() if subs}

    def dispatch(self, update: Update) -> None:
        # The hot loop: one offer per interested client, nothing else (metrics are counted
        # per batch by the stream that sends them). A symbol that left the routing table
        # may still be written while its last records drain: it goes to nobody.
        if not self._served.allows(update.symbol):
            return
        for sub in self._by_key.get(update.key, ()):
            sub.queue.offer(update)
        for sub in self._everything.get(update.kind, ()):
            sub.queue.offer(update)

    # --- the Redis link ------------------------------------------------------
    async def run(self) -> None:
        """Hold the pattern subscription for ever, reconnecting with jittered backoff."""
        attempt = 0
        first = True
        while True:
            # No silent retries inside redis-py: a dropped link must surface so we resync.
            client = aioredis.Redis.from_url(
                self._redis_url, retry=Retry(NoBackoff(), 0), **self._auth.client_kwargs()
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(signalstore.UPDATES_PATTERN)
                if not first:
                    await self._resync(client)
                first = False
                attempt = 0
                self._set_link(True)
                await self._pump(pubsub)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if self.connected.is_set():
                    log.warning(
                        "redis pub/sub link lost: %s", exc, extra={"event": "redis_link_lost"}
                    )
                self._set_link(False)
                first = False
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
            attempt += 1
            delay = min(self._max_backoff_s, 0.05 * 2**attempt)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def _set_link(self, up: bool) -> None:
        metrics.REDIS_CONNECTED.set(1 if up else 0)
        if up:
            self.connected.set()
        else:
            self.connected.clear()
        self._on_link_change(up)

    async def _pump(self, pubsub: aioredis.client.PubSub) -> None:
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is None or message.get("type") != "pmessage":
                continue
            receive_ns = time.time_ns()
            metrics.UPDATES_RECEIVED.inc()
            try:
                update = parse_update(message["channel"], message["data"], receive_ns)
            except (DecodeError, ValueError) as exc:
                metrics.BAD_UPDATES.inc()
                log.warning(
                    "dropping a bad update on %r: %s",
                    message.get("channel"),
                    exc,
                    extra={"event": "bad_update", "channel": message.get("channel")},
                )
                continue
            self.dispatch(update)

    async def _resync(self, client: aioredis.Redis) -> None:
        """Offer every followed symbol's stored value: covers what pub/sub missed."""
        metrics.REDIS_RESYNCS.inc()
        if any(self._everything.values()):
            symbols = await client.smembers(signalstore.SYMBOLS_KEY)
            wanted = {s.decode() if isinstance(s, bytes) else str(s) for s in symbols}
        else:
            wanted = set()
        wanted |= self._followed_symbols()
        for update in await read_latest(client, self._served.select(wanted), signalstore.KINDS):
            self.dispatch(update)
