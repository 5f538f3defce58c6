"""REST depth snapshots within the exchange's request-weight budget.

`WeightBudget` (pure) spaces requests so a shard never spends more than its share of the
per-minute weight, adopts the server's own count (`X-MBX-USED-WEIGHT-1M`) and honours
`Retry-After` after a 429/418. `SnapshotClient` does the HTTP with aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

import orjson

from quantcore.feed import binance

log = logging.getLogger(__name__)


class WeightBudget:
    """A token bucket of request weight refilled continuously over a minute."""

    def __init__(self, per_minute: float, *, min_interval: float = 0.05, now: float = 0.0) -> None:
        self.per_minute = per_minute
        self.min_interval = min_interval  # stagger: never two requests closer than this
        self._tokens = per_minute / 10  # a modest burst at start, not the whole minute
        self._at = now
        self._next_allowed = now
        self.banned_until = 0.0

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(
                self.per_minute, self._tokens + (now - self._at) * self.per_minute / 60
            )
            self._at = now

    def delay(self, weight: float, now: float) -> float:
        """Seconds to wait before a request of `weight` may start."""
        self._refill(now)
        wait = max(0.0, self.banned_until - now, self._next_allowed - now)
        if self._tokens < weight:
            wait = max(wait, (weight - self._tokens) * 60 / self.per_minute)
        return wait

    def spend(self, weight: float, now: float) -> None:
        self._refill(now)
        self._tokens -= weight
        self._next_allowed = now + self.min_interval

    def observe_used(self, used: int, limit: int, now: float) -> None:
        """The server says `used` of `limit` weight is spent this minute: never assume more room."""
        self._refill(now)
        room = (limit - used) * self.per_minute / limit
        self._tokens = min(self._tokens, room)

    def ban(self, retry_after: float, now: float) -> None:
        self.banned_until = max(self.banned_until, now + retry_after)
        self._tokens = min(self._tokens, 0.0)


def backoff(attempts: int, *, base: float = 0.25, cap: float = 30.0) -> float:
    """Capped, jittered exponential backoff: 0 for a first try, then ~base, 2*base, ... <= cap."""
    if attempts <= 0:
        return 0.0
    ceiling = min(cap, base * 2 ** (attempts - 1))
    return random.uniform(ceiling / 2, ceiling)


class SnapshotError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class SnapshotResponse:
    symbol: str
    body: bytes
    recv_ns: int


class SnapshotClient:
    """Fetches depth snapshots (and exchange info) from a Binance-compatible REST endpoint."""

    def __init__(
        self,
        rest_url: str,
        *,
        weight_share: float = 0.5,
        limit: int = binance.SNAPSHOT_LIMIT,
        timeout: float = 10.0,
    ) -> None:
        import aiohttp

        self.rest_url = rest_url.rstrip("/")
        self.limit = limit
        self.budget = WeightBudget(
            binance.REQUEST_WEIGHT_PER_MINUTE * weight_share, now=time.monotonic()
        )
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
        self._lock = asyncio.Lock()
        self.requests = 0
        self.throttled = 0

    async def close(self) -> None:
        await self._session.close()

    async def _slot(self, weight: int) -> None:
        # One caller at a time reserves weight, so concurrent fetches are staggered.
        async with self._lock:
            wait = self.budget.delay(weight, time.monotonic())
            while wait > 0:
                await asyncio.sleep(wait)
                wait = self.budget.delay(weight, time.monotonic())
            self.budget.spend(weight, time.monotonic())

    async def depth(self, symbol: str) -> SnapshotResponse:
        await self._slot(binance.depth_weight(self.limit))
        body = await self._get(binance.depth_url(self.rest_url, symbol, self.limit))
        return SnapshotResponse(symbol, body, time.time_ns())

    async def tick_sizes(self, symbols: list[str]) -> dict[str, float]:
        await self._slot(20)
        query = orjson.dumps(symbols).decode()
        url = f"{self.rest_url}{binance.EXCHANGE_INFO_PATH}?symbols={query}"
        return binance.tick_sizes(orjson.loads(await self._get(url)))

    async def _get(self, url: str) -> bytes:
        self.requests += 1
        async with self._session.get(url) as resp:
            body = await resp.read()
            now = time.monotonic()
            used = resp.headers.get(binance.USED_WEIGHT_HEADER)
            if used and used.isdigit():
                self.budget.observe_used(int(used), binance.REQUEST_WEIGHT_PER_MINUTE, now)
            if resp.status in (binance.HTTP_TOO_MANY_REQUESTS, binance.HTTP_IP_BANNED):
                self.throttled += 1
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                self.budget.ban(retry_after, now)
                log.warning(
                    "REST %s: %s, backing off %.0fs",
                    url,
                    resp.status,
                    retry_after,
                    extra={"url": url, "status": resp.status, "retry_after_s": retry_after},
                )
                raise SnapshotError(f"HTTP {resp.status}")
            if resp.status != 200:
                raise SnapshotError(f"HTTP {resp.status}: {body[:200]!r}")
            return body


def _retry_after(value: str | None) -> float:
    try:
        return max(1.0, float(value)) if value else 60.0
    except ValueError:
        return 60.0
