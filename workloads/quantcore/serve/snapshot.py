"""Reading the current signals out of Redis (the layout in quantcore.signalstore)."""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis.asyncio as aioredis

from quantcore import signalstore
from quantcore.serve.conflation import Update


async def list_symbols(redis: aioredis.Redis) -> list[str]:
    members = await redis.smembers(signalstore.SYMBOLS_KEY)
    return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)


async def read_latest(
    redis: aioredis.Redis, symbols: Iterable[str], kinds: Iterable[str]
) -> list[Update]:
    """The stored update for every (symbol, kind) that has one, in one round trip."""
    symbols = list(symbols)
    kinds = list(kinds)
    fields: list[str] = []
    for kind in kinds:
        fields += [signalstore.seq_field(kind), kind]
    async with redis.pipeline(transaction=False) as pipe:
        for symbol in symbols:
            pipe.hmget(signalstore.state_key(symbol), fields)
        rows = await pipe.execute()
    now = time.time_ns()
    latest: list[Update] = []
    for symbol, values in zip(symbols, rows, strict=True):
        for i, kind in enumerate(kinds):
            seq, payload = values[2 * i], values[2 * i + 1]
            if seq is None or payload is None:
                continue
            latest.append(Update(symbol, kind, int(seq), bytes(payload), now))
    return latest
