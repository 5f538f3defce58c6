"""An independent gRPC client (grpcurl, Go) lists and calls the server through reflection
alone: no .proto files are given to it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from quantcore.devservices.cache import cache_root
from quantcore.devservices.redis import RedisServer
from quantcore.redisacl import SERVE
from quantcore.serve.server import MarketDataServer, ServerConfig
from tests.integration.signalsink import SignalSink

pytestmark = pytest.mark.integration


def grpcurl_binary() -> str:
    """$GRPCURL (set by `make`), then PATH, then the cache `make grpcurl` fills."""
    candidates = [os.environ.get("GRPCURL"), shutil.which("grpcurl")]
    candidates += [str(p) for p in sorted((cache_root() / "tools").glob("grpcurl-*/grpcurl"))]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("grpcurl is not installed: run `make grpcurl`")


@pytest.fixture
async def server(redis_server: RedisServer) -> AsyncIterator[MarketDataServer]:
    client = aioredis.Redis.from_url(redis_server.url)
    sink = SignalSink(client)
    await sink.book("BTCUSDT", 41, 61_000.5)
    await sink.book("ETHUSDT", 7, 2_600.25)
    await client.aclose()
    srv = MarketDataServer(
        ServerConfig(
            redis_url=redis_server.address,
            redis_auth=redis_server.auth(SERVE),
            host="127.0.0.1",
            port=0,
        )
    )
    await srv.start()
    async with asyncio.timeout(10):
        await srv.wait_linked()
    try:
        yield srv
    finally:
        await srv.stop(grace=1)


async def grpcurl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        grpcurl_binary(),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, f"grpcurl {' '.join(args)} failed: {err.decode()}"
    return out.decode()


async def test_grpcurl_lists_describes_and_calls_through_reflection(
    server: MarketDataServer,
) -> None:
    addr = f"127.0.0.1:{server.port}"
    services = (await grpcurl("-plaintext", addr, "list")).split()
    assert "quantcore.v1.MarketData" in services
    assert "grpc.health.v1.Health" in services

    methods = (await grpcurl("-plaintext", addr, "list", "quantcore.v1.MarketData")).split()
    assert methods == [
        "quantcore.v1.MarketData.GetSnapshot",
        "quantcore.v1.MarketData.History",
        "quantcore.v1.MarketData.ListSymbols",
        "quantcore.v1.MarketData.Subscribe",
    ]
    described = await grpcurl("-plaintext", addr, "describe", "quantcore.v1.SignalUpdate")
    assert "sequence" in described
    assert "BookSignals book" in described

    listed = json.loads(await grpcurl("-plaintext", addr, "quantcore.v1.MarketData/ListSymbols"))
    assert listed == {"symbols": ["BTCUSDT", "ETHUSDT"]}

    snap = json.loads(
        await grpcurl(
            "-plaintext",
            "-d",
            '{"symbols": ["BTCUSDT"]}',
            addr,
            "quantcore.v1.MarketData/GetSnapshot",
        )
    )
    (update,) = snap["updates"]
    assert update["symbol"] == "BTCUSDT"
    assert update["sequence"] == "41"  # int64 is a string in proto3 JSON
    assert update["book"]["mid"] == 61_000.5

    # Subscribe is a server stream: grpcurl prints the snapshot, then the deadline ends it.
    proc = await asyncio.create_subprocess_exec(
        grpcurl_binary(),
        "-plaintext",
        "-max-time",
        "3",
        "-d",
        '{"symbols": ["ETHUSDT"]}',
        addr,
        "quantcore.v1.MarketData/Subscribe",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert b"DeadlineExceeded" in err, err.decode()
    first_batch = json.loads(out.decode().split("\n}\n")[0] + "\n}")
    (first,) = first_batch["updates"]
    assert first["symbol"] == "ETHUSDT"
    assert first["sequence"] == "7"
    assert first["book"]["mid"] == 2_600.25

    health = json.loads(
        await grpcurl(
            "-plaintext",
            "-d",
            '{"service": "quantcore.v1.MarketData"}',
            addr,
            "grpc.health.v1.Health/Check",
        )
    )
    assert health == {"status": "SERVING"}
