"""StreamConnection against a real websocket server on loopback: the frames the inline path
hands over, the ones it leaves to websockets (fragmented and binary messages), and a handler
that raises."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode
from websockets.utils import accept_key

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


@contextlib.asynccontextmanager
async def _running(conn: StreamConnection) -> AsyncIterator[None]:
    """`conn` runs for the body of the block and is cancelled after it."""
    task = asyncio.create_task(conn.run())
    try:
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _eventually(condition: Callable[[], bool]) -> None:
    """Waits up to 10 s until `condition()` holds (it reads counters no callback reports)."""
    async with asyncio.timeout(10):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


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
    async with _running(conn), asyncio.timeout(10):
        await all_in.wait()
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


BIG = b'{"stream":"btcusdt@trade","data":{"pad":"%s"}}' % (b"x" * 70_000)


async def test_pings_big_frames_and_close_after_the_fast_path_took_over() -> None:
    """After the handshake the splitter owns the socket: the client still answers the
    server's ping, a 70 kB frame (64-bit length) arrives whole, and a close from the server
    ends the connection so that it reconnects."""
    pongs: list[bool] = []
    served: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        served.append(ws)
        await ws.send(FRAMES[0].decode())
        if len(served) > 1:  # the reconnection: stays open
            await ws.wait_closed()
            return
        pong = await ws.ping(b"still there?")
        async with asyncio.timeout(5):
            await pong
        pongs.append(True)
        await ws.send(BIG.decode())
        await ws.close(1001, "going away")

    received: list[bytes] = []
    lost: list[str] = []
    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        conn = StreamConnection(
            "test",
            f"ws://127.0.0.1:{port}",
            lambda frame, recv_ns: received.append(frame),
            lambda streams, reason: lost.append(reason),
            ConnectionSettings(backoff_base_s=0.05),
        )
        conn.subscribe(["btcusdt@trade"])
        async with _running(conn):
            await _eventually(lambda: conn.connects >= 2 and len(received) >= 3)
    assert received == [FRAMES[0], BIG, FRAMES[0]]  # the second connection starts over
    assert pongs == [True]
    assert conn.connects == 2
    assert lost == ["reconnect"]
    assert conn.frame_errors == 0


async def _raw_server(reply: Callable[[bytes], bytes], later: bytes = b"") -> asyncio.Server:
    """A bare TCP server that answers each handshake request with `reply(request)` in a
    single write, `later` in a second one, then keeps the socket open until the client goes."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        writer.write(reply(request))
        await writer.drain()
        if later:
            await asyncio.sleep(0.2)
            writer.write(later)
            await writer.drain()
        await reader.read()  # until the client closes
        writer.close()

    return await asyncio.start_server(on_client, "127.0.0.1", 0)


def _accept(request: bytes) -> bytes:
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    return accept_key(key.decode()).encode()


async def test_frames_in_the_same_segment_as_the_handshake_come_first_and_in_order() -> None:
    """The server's 101 response and its first frames arrive in one read: websockets gets
    the response alone, and the frames behind it go to the handler before later ones."""
    first, second = (
        b"".join(Frame(Opcode.TEXT, f).serialize(mask=False) for f in part)
        for part in (FRAMES[:2], FRAMES[2:])
    )

    def reply(request: bytes) -> bytes:
        return (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + _accept(request) + b"\r\n\r\n" + first
        )

    received: list[bytes] = []
    server = await _raw_server(reply, later=second)
    port = server.sockets[0].getsockname()[1]
    conn = StreamConnection(
        "test", f"ws://127.0.0.1:{port}", lambda frame, recv_ns: received.append(frame),
        lambda streams, reason: None, ConnectionSettings(),
    )  # fmt: skip
    conn.subscribe(["btcusdt@trade"])
    async with server, _running(conn):
        await _eventually(lambda: len(received) >= len(FRAMES))
    assert received == FRAMES
    assert conn.connects == 1


async def test_a_refused_handshake_is_a_failed_connect_not_a_fast_path() -> None:
    def reply(request: bytes) -> bytes:
        body = b'{"code":-1003,"msg":"too many requests"}'
        return b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    server = await _raw_server(reply)
    port = server.sockets[0].getsockname()[1]
    conn = StreamConnection(
        "test", f"ws://127.0.0.1:{port}", lambda frame, recv_ns: None,
        lambda streams, reason: None, ConnectionSettings(backoff_base_s=0.05),
    )  # fmt: skip
    async with server, _running(conn):
        await _eventually(lambda: conn.reconnects >= 2)
    assert conn.connects == 0
    assert "429" in conn.errors[0]
