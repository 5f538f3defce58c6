"""The MarketData server against a real redis-server: snapshot-then-stream, selection,
slow consumers, and server and Redis restarts."""

from __future__ import annotations

import asyncio
import itertools
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quantcore.client.stream import MarketDataClient, Subscription, flatten
from quantcore.devservices.ports import free_port
from quantcore.devservices.programs import ServeProcess, child_env
from quantcore.devservices.redis import RedisServer
from quantcore.redisacl import SERVE
from quantcore.serve.server import SERVICE_NAME, MarketDataServer, ServerConfig
from quantcore.v1 import marketdata_pb2, marketdata_pb2_grpc, signals_pb2
from tests.integration.signalsink import SignalSink

pytestmark = pytest.mark.integration


@pytest.fixture
async def sink(redis_server: RedisServer) -> AsyncIterator[SignalSink]:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield SignalSink(client)
    finally:
        await client.aclose()


@pytest.fixture
async def server(redis_server: RedisServer) -> AsyncIterator[MarketDataServer]:
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


def target(srv: MarketDataServer) -> str:
    return f"127.0.0.1:{srv.port}"


class Updates:
    """The updates of one Subscribe call, read one at a time across batches."""

    def __init__(self, call: grpc.aio.UnaryStreamCall) -> None:
        self.call = call
        self._it = flatten(call)

    async def next(self) -> signals_pb2.SignalUpdate:
        return await anext(self._it)

    def cancel(self) -> None:
        self.call.cancel()


async def read_n(updates: Updates, n: int) -> list[signals_pb2.SignalUpdate]:
    out = []
    async with asyncio.timeout(30):
        for _ in range(n):
            out.append(await updates.next())
    return out


async def test_snapshot_first_then_every_change(server: MarketDataServer, sink: SignalSink) -> None:
    for seq in range(1, 6):
        await sink.book("BTCUSDT", seq, 60_000.0 + seq)
    for seq in range(1, 4):
        await sink.book("ETHUSDT", seq, 2_500.0 + seq)
    async with grpc.aio.insecure_channel(target(server)) as channel:
        stub = marketdata_pb2_grpc.MarketDataStub(channel)
        call = Updates(
            stub.Subscribe(marketdata_pb2.SubscribeRequest(symbols=["BTCUSDT", "ethusdt"]))
        )
        first = await read_n(call, 2)
        assert {(u.symbol, u.sequence, u.book.mid) for u in first} == {
            ("BTCUSDT", 5, 60_005.0),
            ("ETHUSDT", 3, 2_503.0),
        }
        # One write per read: the queue conflates what a busy client has not read yet, so
        # a burst may legitimately arrive as its last value (the slow-consumer tests).
        live = []
        for seq in range(6, 9):
            await sink.book("BTCUSDT", seq, 60_000.0 + seq)
            live += await read_n(call, 1)
        assert [(u.sequence, u.book.mid) for u in live] == [
            (6, 60_006.0),
            (7, 60_007.0),
            (8, 60_008.0),
        ]
        # The server stamps its two hops; the sink's own stamp survives the byte forwarding.
        for u in live:
            assert u.hops.sink_write_ns > 0
            assert u.hops.sink_write_ns <= u.hops.server_receive_ns <= u.hops.server_send_ns
        # A stale write is refused by the store and never reaches the stream.
        assert not await sink.book("BTCUSDT", 7, 1.0)
        await sink.book("BTCUSDT", 9, 60_009.0)
        (after,) = await read_n(call, 1)
        assert after.sequence == 9
        call.cancel()


async def test_no_gap_and_no_duplicate_at_the_seam(
    server: MarketDataServer, sink: SignalSink
) -> None:
    """Clients join while the writer runs flat out: each sees strictly growing sequences,
    starting at or above what was stored when it joined, ending at the last write."""
    last = 3_000
    clients = 12
    written = 0

    async def writer() -> None:
        nonlocal written
        for seq in range(1, last + 1):
            await sink.book("BTCUSDT", seq, float(seq))
            written = seq

    async def client(delay: float) -> tuple[int, list[int]]:
        await asyncio.sleep(delay)
        joined_at = written
        seen: list[int] = []
        async with grpc.aio.insecure_channel(target(server)) as channel:
            call = marketdata_pb2_grpc.MarketDataStub(channel).Subscribe(
                marketdata_pb2.SubscribeRequest(symbols=["BTCUSDT"])
            )
            async with asyncio.timeout(60):
                async for update in flatten(call):
                    assert update.book.mid == float(update.sequence)
                    seen.append(update.sequence)
                    if update.sequence == last:
                        break
        return joined_at, seen

    async with asyncio.TaskGroup() as tg:
        tg.create_task(writer())
        results = [tg.create_task(client(0.05 * i)) for i in range(clients)]
    for task in results:
        joined_at, seen = task.result()
        assert seen, "a client got nothing"
        assert seen[0] >= joined_at, "the first value is older than the store when it joined"
        assert all(a < b for a, b in itertools.pairwise(seen)), "sequence not increasing"
        assert seen[-1] == last


async def test_selection_interval_snapshot_and_symbols(
    server: MarketDataServer, sink: SignalSink
) -> None:
    await sink.book("BTCUSDT", 1, 100.0)
    await sink.book("ETHUSDT", 1, 10.0)
    async with grpc.aio.insecure_channel(target(server)) as channel:
        stub = marketdata_pb2_grpc.MarketDataStub(channel)
        listed = await stub.ListSymbols(marketdata_pb2.ListSymbolsRequest(), timeout=5)
        assert list(listed.symbols) == ["BTCUSDT", "ETHUSDT"]

        snap = await stub.GetSnapshot(marketdata_pb2.SnapshotRequest(symbols=["ETHUSDT"]))
        assert [(u.symbol, u.sequence, u.book.mid) for u in snap.updates] == [("ETHUSDT", 1, 10.0)]

        # Field selection: only book.spread (plus the always-sent identity and hops).
        req = marketdata_pb2.SubscribeRequest(symbols=["BTCUSDT"])
        req.fields.paths.append("book.spread")
        (masked,) = await read_n(Updates(stub.Subscribe(req)), 1)
        assert masked.WhichOneof("body") == "book"
        assert masked.book.spread == 1.0
        assert masked.book.mid == 0.0
        assert masked.sequence == 1
        assert masked.hops.server_send_ns > 0

        # Minimum interval: a burst of 200 writes in well under a second reaches a
        # 300 ms subscriber as the snapshot plus a few conflated values, ending at the last.
        call = Updates(
            stub.Subscribe(
                marketdata_pb2.SubscribeRequest(symbols=["BTCUSDT"], min_interval_ms=300)
            )
        )
        (snapshot_value,) = await read_n(call, 1)
        for seq in range(2, 202):
            await sink.book("BTCUSDT", seq, 100.0 + seq)
        seen = [snapshot_value.sequence]
        async with asyncio.timeout(10):
            while seen[-1] != 201:
                seen.append((await call.next()).sequence)
        assert len(seen) < 20, f"min_interval did not conflate: {len(seen)} updates"
        call.cancel()

        # Bad requests get INVALID_ARGUMENT with a reason.
        for bad in (
            marketdata_pb2.SubscribeRequest(symbols=["BTC/USDT"]),
            marketdata_pb2.SubscribeRequest(symbols=["BTCUSDT"], kinds=["candles"]),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await read_n(Updates(stub.Subscribe(bad)), 1)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad_mask = marketdata_pb2.SubscribeRequest(symbols=["BTCUSDT"])
        bad_mask.fields.paths.append("book.no_such_field")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await read_n(Updates(stub.Subscribe(bad_mask)), 1)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "no_such_field" in (info.value.details() or "")

        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_stream_limit_refuses_with_resource_exhausted(
    redis_server: RedisServer, sink: SignalSink
) -> None:
    await sink.book("BTCUSDT", 1, 1.0)
    config = ServerConfig(
        redis_url=redis_server.address,
        redis_auth=redis_server.auth(SERVE),
        host="127.0.0.1",
        port=0,
        max_streams=2,
    )
    srv = MarketDataServer(config)
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(target(srv)) as channel:
            stub = marketdata_pb2_grpc.MarketDataStub(channel)
            req = marketdata_pb2.SubscribeRequest(symbols=["BTCUSDT"])
            open_calls = [Updates(stub.Subscribe(req)) for _ in range(2)]
            for call in open_calls:
                await read_n(call, 1)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await read_n(Updates(stub.Subscribe(req)), 1)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            for call in open_calls:
                call.cancel()
    finally:
        await srv.stop(grace=1)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture
async def serve_process(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[ServeProcess]:
    """`quantcore serve` as a child process, so restarts and memory are the real thing."""
    proc = ServeProcess(
        redis_server.address,
        free_port(),
        tmp_path / "serve.log",
        "--shutdown-grace",
        "1",
        redis_auth=redis_server.auth(SERVE),
    )
    await asyncio.to_thread(proc.__enter__)
    try:
        yield proc
    finally:
        await asyncio.to_thread(proc.kill)


async def test_slow_consumer_is_conflated_and_memory_stays_bounded(
    serve_process: ServeProcess, sink: SignalSink
) -> None:
    """One client stops reading while ten keep up. The ten get every symbol's last value;
    the server's memory does not grow with what the stalled client failed to read."""
    symbols = [f"SYM{i}USDT" for i in range(10)]
    for symbol in symbols:
        await sink.book(symbol, 0, 0.0)
    addr = f"127.0.0.1:{serve_process.port}"
    payload = 8192  # bytes of padding per update: 20,000 updates carry ~160 MB
    rounds = 2_000

    async with grpc.aio.insecure_channel(addr) as stalled_channel:
        stalled = Updates(
            marketdata_pb2_grpc.MarketDataStub(stalled_channel).Subscribe(
                marketdata_pb2.SubscribeRequest(symbols=symbols)
            )
        )
        await read_n(stalled, 1)  # connected; from here on it reads nothing
        base_rss = rss_bytes(serve_process.pid)

        async def fast_reader() -> dict[str, int]:
            last: dict[str, int] = {}
            async with grpc.aio.insecure_channel(addr) as channel:
                call = marketdata_pb2_grpc.MarketDataStub(channel).Subscribe(
                    marketdata_pb2.SubscribeRequest(symbols=symbols)
                )
                async with asyncio.timeout(300):
                    async for update in flatten(call):
                        assert update.sequence > last.get(update.symbol, -1)
                        last[update.symbol] = update.sequence
                        if all(last.get(s) == rounds for s in symbols):
                            return last
            return last

        readers = [asyncio.create_task(fast_reader()) for _ in range(10)]
        await asyncio.sleep(0.5)
        peak_rss = base_rss
        for seq in range(1, rounds + 1):
            await sink.books([(s, seq, float(seq)) for s in symbols], padding=payload)
            if seq % 200 == 0:
                peak_rss = max(peak_rss, rss_bytes(serve_process.pid))
        finished = await asyncio.gather(*readers)
        peak_rss = max(peak_rss, rss_bytes(serve_process.pid))
        for last in finished:
            assert last == dict.fromkeys(symbols, rounds)
        published = rounds * len(symbols) * payload
        growth = peak_rss - base_rss
        print(f"published {published / 1e6:.0f} MB; server RSS grew {growth / 1e6:.1f} MB")
        # Unbounded buffering for the stalled client would hold most of `published`.
        assert growth < published / 4, f"server RSS grew {growth / 1e6:.0f} MB"
        stalled.cancel()


async def test_clients_resume_after_server_restart(
    serve_process: ServeProcess, sink: SignalSink
) -> None:
    await sink.book("BTCUSDT", 1, 1.0)
    client = MarketDataClient(
        f"127.0.0.1:{serve_process.port}", Subscription(symbols=("BTCUSDT",)), max_backoff_s=0.3
    )
    seen: list[int] = []
    stop_at = 400

    async def consume() -> None:
        async for update in client.updates():
            seen.append(update.sequence)
            if update.sequence == stop_at:
                return

    async def write_and_restart() -> None:
        for seq in range(2, stop_at + 1):
            await sink.book("BTCUSDT", seq, float(seq))
            await asyncio.sleep(0.005)
            if seq == 150:
                # graceful: exit code 0
                assert await asyncio.to_thread(serve_process.stop, 20.0) == 0
            if seq == 250:
                await asyncio.to_thread(serve_process.__enter__)

    async with asyncio.timeout(60):
        async with asyncio.TaskGroup() as tg:
            tg.create_task(consume())
            tg.create_task(write_and_restart())
    assert client.stats.connects >= 2, "the client never reconnected"
    assert all(a < b for a, b in itertools.pairwise(seen))
    assert seen[-1] == stop_at
    # Values from both sides of the restart arrived; nothing in between could (server down).
    assert any(s <= 150 for s in seen)
    assert not any(150 < s < 250 for s in seen)


async def test_clients_resume_after_redis_restart(
    redis_server: RedisServer, server: MarketDataServer
) -> None:
    redis_client = aioredis.Redis.from_url(redis_server.url)
    sink = SignalSink(redis_client)
    await sink.book("ETHUSDT", 1, 1.0)
    client = MarketDataClient(target(server), Subscription(symbols=("ETHUSDT",)))
    seen: list[int] = []

    async def consume() -> None:
        async for update in client.updates():
            seen.append(update.sequence)
            if update.sequence == 300:
                return

    consumer = asyncio.create_task(consume())
    for seq in range(2, 101):
        await sink.book("ETHUSDT", seq, float(seq))
    await redis_client.aclose()
    # Restart Redis on the same port; it comes back empty (no persistence), as a
    # crashed cache would. The pipeline's sequences keep growing.
    redis_server.stop()
    await asyncio.sleep(0.5)
    redis_server.start()
    redis_client = aioredis.Redis.from_url(redis_server.url)
    sink = SignalSink(redis_client)
    async with asyncio.timeout(15):
        await server.wait_linked()
    async with grpc.aio.insecure_channel(target(server)) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        async with asyncio.timeout(15):
            while True:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
                await asyncio.sleep(0.1)
    for seq in range(201, 301):
        await sink.book("ETHUSDT", seq, float(seq))
        await asyncio.sleep(0.002)
    async with asyncio.timeout(20):
        await consumer
    await redis_client.aclose()
    assert all(a < b for a, b in itertools.pairwise(seen))
    assert seen[-1] == 300
    assert 100 in seen, "values written before the restart were lost"


def test_serve_command_rejects_a_taken_port(redis_server: RedisServer, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "quantcore.cli",
                "serve",
                "--redis",
                redis_server.address,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env=child_env(redis_server.auth(SERVE)),
        )
    assert result.returncode != 0
    assert "quantcore serve:" in result.stderr
