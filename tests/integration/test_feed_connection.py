"""StreamConnection against a real websocket server on loopback: the frames the inline path
hands over, the ones it leaves to websockets (fragmented and binary messages), and a handler
that raises."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import ServerConnection, serve

from quantcore.feed.connection import ConnectionSettings, StreamConnection

pytestmark = pytest.mark.integration

FRAMES = [b'{"stream":"btcusdt@trade","data":{"n":%d}}' % i for i in range(5)]


async def _send_mixed(ws: ServerConnection) -> None:
    await ws.send(FRAMES[0].decode())
    await ws.send(FRAMES[1].decode())
    # A fragmented text message: websockets' own path, read by recv().
    await ws.send(iter([FRAMES[2][:10].decode(), FRAMES[2][10:].decode()]))
    await ws.send(b"\x00binary")  # no exchange sends this: it is quarantined, not dropped
    await ws.send(FRAMES[3].decode())
    await ws.send(FRAMES[4].decode())
    await ws.wait_closed()


@pytest.fixture
async def server_url() -> AsyncIterator[str]:
    async with serve(_send_mixed, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


async def _collect(url: str, fail_on: bytes | None = None) -> tuple[list[bytes], StreamConnection]:
    received: list[bytes] = []
    all_in = asyncio.Event()

    def on_frame(frame: bytes, recv_ns: int) -> None:
        assert recv_ns > 0
        received.append(frame)
        if len(received) == len(FRAMES) + 1:
            all_in.set()
        if frame == fail_on:
            raise RuntimeError("a bug in the handler")

    conn = StreamConnection(
        "test", url, on_frame, lambda streams, reason: None, ConnectionSettings()
    )
    conn.subscribe(["btcusdt@trade"])
    task = asyncio.create_task(conn.run())
    try:
        async with asyncio.timeout(10):
            await all_in.wait()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return received, conn


async def test_every_frame_reaches_the_handler_whichever_path_it_takes(server_url: str) -> None:
    received, conn = await _collect(server_url)
    assert sorted(received) == sorted([*FRAMES, b"\x00binary"])
    # Complete text frames keep their order; only the fragmented one may come later.
    whole = [f for f in received if f in (FRAMES[0], FRAMES[1], FRAMES[3], FRAMES[4])]
    assert whole == [FRAMES[0], FRAMES[1], FRAMES[3], FRAMES[4]]
    assert conn.frame_errors == 0


async def test_a_handler_that_raises_loses_that_frame_only(server_url: str) -> None:
    received, conn = await _collect(server_url, fail_on=FRAMES[1])
    assert sorted(received) == sorted([*FRAMES, b"\x00binary"])
    assert conn.frame_errors == 1
    assert conn.connects == 1  # the connection stayed up
