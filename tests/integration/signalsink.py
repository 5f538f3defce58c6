"""A test-side stand-in for the stream job's Redis sink: the sink's own Lua script
(quantcore.signalstore.CAS_SCRIPT) driven from asyncio, so serving tests need no Spark.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from quantcore import signalstore
from quantcore.v1 import signals_pb2


def book_update(symbol: str, sequence: int, mid: float, padding: int = 0) -> bytes:
    """An encoded book update; `padding` appends an unknown field of that many bytes
    (protobuf keeps unknown fields, so the server forwards them: a way to send big updates)."""
    update = signals_pb2.SignalUpdate(
        symbol=symbol,
        sequence=sequence,
        event_time_ms=time.time_ns() // 1_000_000,
        hops=signals_pb2.Hops(sink_write_ns=time.time_ns()),
        book=signals_pb2.BookSignals(mid=mid, best_bid=mid - 0.5, best_ask=mid + 0.5, spread=1.0),
    )
    data = update.SerializeToString()
    if padding:
        # field 1000, wire type 2 (length-delimited): tag varint 0xC2 0x3E
        data += b"\xc2\x3e" + _varint(padding) + b"x" * padding
    return data


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class SignalSink:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._script = redis.register_script(signalstore.CAS_SCRIPT)

    async def write(self, symbol: str, kind: str, sequence: int, payload: bytes) -> bool:
        accepted = await self._script(
            keys=[signalstore.state_key(symbol), signalstore.SYMBOLS_KEY],
            args=[kind, str(sequence), payload, symbol, signalstore.channel(symbol)],
        )
        return bool(accepted)

    async def book(self, symbol: str, sequence: int, mid: float, padding: int = 0) -> bool:
        return await self.write(
            symbol, "book", sequence, book_update(symbol, sequence, mid, padding)
        )

    async def books(self, updates: list[tuple[str, int, float]], padding: int = 0) -> None:
        """Write many book updates in one round trip (each still its own atomic script)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for symbol, sequence, mid in updates:
                await self._script(
                    keys=[signalstore.state_key(symbol), signalstore.SYMBOLS_KEY],
                    args=[
                        "book",
                        str(sequence),
                        book_update(symbol, sequence, mid, padding),
                        symbol,
                        signalstore.channel(symbol),
                    ],
                    client=pipe,
                )
            await pipe.execute()
