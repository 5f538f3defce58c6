"""Serving follows the routing table (real redis-server): a symbol that leaves the table
leaves ListSymbols and is sent to no subscriber, though Redis keeps its value; one that
joins is served at once. And `quantcore serve --metrics-port` answers /metrics."""

from __future__ import annotations

import asyncio
import os
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quantcore.devservices.ports import free_port
from quantcore.devservices.programs import ServeProcess
from quantcore.devservices.redis import RedisServer
from quantcore.redisacl import RELAY, SERVE
from quantcore.routing import Route, RoutingTable
from quantcore.serve.server import SERVICE_NAME, MarketDataServer, ServerConfig
from quantcore.v1 import marketdata_pb2, marketdata_pb2_grpc
from tests.fixtures.cluster import eventually
from tests.integration.signalsink import SignalSink
from tests.integration.test_serve import Updates, read_n

pytestmark = pytest.mark.integration

T = TypeVar("T")


async def until(probe: Callable[[], Awaitable[T]], what: str, within: float = 10.0) -> T:
    """Poll an async `probe` until it returns something truthy (the server runs on this loop,
    so a blocking wait would stall it)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await probe()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


def write_table(path: Path, version: int, *symbols: str) -> None:
    """Replace the file in one rename, as a ConfigMap volume swaps its data."""
    table = RoutingTable.of(
        [Route(s, 0, 0) for s in symbols], partitions=1, shards=1, version=version
    )
    staged = path.with_name(path.name + ".new")
    staged.write_text(table.to_json())
    os.replace(staged, path)


@pytest.fixture
async def sink(redis_server: RedisServer) -> AsyncIterator[SignalSink]:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield SignalSink(client)
    finally:
        await client.aclose()


def routed_server(redis_server: RedisServer, routing: Path) -> MarketDataServer:
    return MarketDataServer(
        ServerConfig(
            redis_url=redis_server.address,
            redis_auth=redis_server.auth(SERVE),
            host="127.0.0.1",
            port=0,
            routing_path=routing,
            routing_poll_s=0.05,
        )
    )


async def test_departed_symbols_leave_the_api_and_returning_ones_come_back(
    redis_server: RedisServer, sink: SignalSink, tmp_path: Path
) -> None:
    routing = tmp_path / "routing.json"
    write_table(routing, 1, "BTCUSDT", "ETHUSDT", "SOLUSDT")
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "OLDUSDT"):  # OLDUSDT: left long ago
        await sink.book(symbol, 1, 100.0)
    server = routed_server(redis_server, routing)
    await server.start()
    try:
        async with asyncio.timeout(10):
            await server.wait_linked()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = marketdata_pb2_grpc.MarketDataStub(channel)

            async def listed() -> list[str]:
                reply = await stub.ListSymbols(marketdata_pb2.ListSymbolsRequest(), timeout=5)
                return list(reply.symbols)

            await until(
                lambda: _equals(listed(), ["BTCUSDT", "ETHUSDT", "SOLUSDT"]), "the first table"
            )
            everything = Updates(stub.Subscribe(marketdata_pb2.SubscribeRequest()))
            snapshot = await read_n(everything, 3)
            assert sorted(u.symbol for u in snapshot) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]

            # SOLUSDT leaves the table; Redis still holds it and the job may still write it.
            write_table(routing, 2, "BTCUSDT", "ETHUSDT")
            await until(lambda: _equals(listed(), ["BTCUSDT", "ETHUSDT"]), "SOLUSDT to go")
            assert await sink.book("SOLUSDT", 2, 101.0)  # accepted and published by Redis
            assert await sink.book("BTCUSDT", 2, 102.0)
            # One pub/sub link, in order: had SOLUSDT's update been forwarded, it came first.
            (after,) = await read_n(everything, 1)
            assert (after.symbol, after.sequence) == ("BTCUSDT", 2)
            snap = await stub.GetSnapshot(
                marketdata_pb2.SnapshotRequest(symbols=["SOLUSDT", "ETHUSDT"]), timeout=5
            )
            assert [u.symbol for u in snap.updates] == ["ETHUSDT"]
            explicit = Updates(
                stub.Subscribe(marketdata_pb2.SubscribeRequest(symbols=["SOLUSDT", "ETHUSDT"]))
            )
            (first,) = await read_n(explicit, 1)
            assert first.symbol == "ETHUSDT"

            # SOLUSDT returns: listed again, and both streams get its current value at once.
            write_table(routing, 3, "BTCUSDT", "ETHUSDT", "SOLUSDT")
            await until(
                lambda: _equals(listed(), ["BTCUSDT", "ETHUSDT", "SOLUSDT"]), "SOLUSDT back"
            )
            (back,) = await read_n(everything, 1)
            assert (back.symbol, back.sequence) == ("SOLUSDT", 2)
            (back_explicit,) = await read_n(explicit, 1)
            assert (back_explicit.symbol, back_explicit.sequence) == ("SOLUSDT", 2)
            everything.cancel()
            explicit.cancel()
    finally:
        await server.stop(grace=1)


async def test_not_ready_until_the_table_is_read_and_a_broken_file_keeps_it(
    redis_server: RedisServer, sink: SignalSink, tmp_path: Path
) -> None:
    routing = tmp_path / "routing.json"  # not there yet
    await sink.book("BTCUSDT", 1, 100.0)
    await sink.book("ETHUSDT", 1, 100.0)
    server = routed_server(redis_server, routing)
    await server.start()
    try:
        async with asyncio.timeout(10):
            await server.wait_linked()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = marketdata_pb2_grpc.MarketDataStub(channel)
            health = health_pb2_grpc.HealthStub(channel)

            async def status() -> int:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
                return int(reply.status)

            # Linked to Redis, but no table: not ready, and nothing served rather than stale.
            assert await status() == health_pb2.HealthCheckResponse.NOT_SERVING
            reply = await stub.ListSymbols(marketdata_pb2.ListSymbolsRequest(), timeout=5)
            assert list(reply.symbols) == []

            write_table(routing, 1, "ETHUSDT")

            async def serving() -> bool:
                return await status() == health_pb2.HealthCheckResponse.SERVING

            await until(serving, "SERVING once the table is read")
            reply = await stub.ListSymbols(marketdata_pb2.ListSymbolsRequest(), timeout=5)
            assert list(reply.symbols) == ["ETHUSDT"]

            errors = _errors()
            routing.write_text('{"version": 2, "routes": ')  # cut short
            await until(_async(lambda: _errors() > errors), "the broken file to be noticed")
            assert server.served.version == 1
            reply = await stub.ListSymbols(marketdata_pb2.ListSymbolsRequest(), timeout=5)
            assert list(reply.symbols) == ["ETHUSDT"]
            assert await status() == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(grace=1)


def test_serve_command_answers_metrics_on_its_metrics_port(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    import redis

    from quantcore import signalstore
    from tests.integration.signalsink import book_update

    routing = tmp_path / "routing.json"
    write_table(routing, 7, "BTCUSDT", "ETHUSDT")
    metrics_port = free_port()
    with ServeProcess(
        redis_server.address,
        free_port(),
        tmp_path / "serve.log",
        "--metrics-port",
        str(metrics_port),
        "--routing",
        str(routing),
        redis_auth=redis_server.auth(SERVE),
    ):
        url = f"http://127.0.0.1:{metrics_port}/metrics"

        def scrape() -> dict[str, float]:
            with urllib.request.urlopen(url, timeout=5) as reply:
                assert reply.status == 200
                text = reply.read().decode()
            return {
                name: float(value)
                for name, value in (
                    line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#")
                )
            }

        # The routing table and the Redis subscription come up independently: wait on both,
        # since the update written below is only counted once the subscription is live.
        def ready() -> dict[str, float] | None:
            samples = scrape()
            routed = samples.get("quantcore_serve_routing_version") == 7
            subscribed = samples.get("quantcore_serve_redis_connected") == 1
            return samples if routed and subscribed else None

        samples = eventually(ready, "the routing version and the Redis link on /metrics")
        assert samples is not None
        assert samples["quantcore_serve_routed_symbols"] == 2
        received = samples["quantcore_serve_updates_received_total"]
        writer = signalstore.SignalWriter(redis.Redis.from_url(redis_server.url_for(RELAY)))
        assert writer.write("BTCUSDT", "book", 1, book_update("BTCUSDT", 1, 100.0))
        eventually(
            lambda: scrape()["quantcore_serve_updates_received_total"] == received + 1,
            "the update counted on /metrics",
        )


async def _equals(got: Awaitable[list[str]], want: list[str]) -> bool:
    return await got == want


def _async(probe: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def run() -> bool:
        return probe()

    return run


def _errors() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("quantcore_serve_routing_errors_total") or 0.0
