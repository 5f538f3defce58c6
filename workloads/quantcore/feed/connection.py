"""One combined-stream websocket that stays up: subscriptions, backoff, watchdog, handover.

- SUBSCRIBE/UNSUBSCRIBE go through a queue drained at most `MAX_CONTROL_PER_S` a second.
- A lost connection is reopened with capped, jittered exponential backoff; its streams are
  reported lost (`on_lost`) because frames were missed.
- Make-before-break: at the lifetime limit or on `serverShutdown` a second socket is opened
  and the old one is closed only once the new one delivers data (duplicates in the overlap are
  dropped downstream by exchange sequence).
- The watchdog probes with a ping when nothing arrived for `idle_probe` seconds and drops the
  connection only if the pong does not come back: a quiet symbol is not a dead socket.
- Each complete text frame reaches `on_frame` from the socket's read callback, split off the
  byte stream by `wsframes.FrameSplitter`, not parsed by websockets' generator-based parser
  and queued for a `recv()` per frame (`wsclient.inline_connection`): that round trip was a
  third of a saturated shard's CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from quantcore import logs
from quantcore.feed import binance
from quantcore.feed.messages import Control
from quantcore.feed.snapshots import backoff
from quantcore.feed.wsclient import inline_connection

log = logging.getLogger(__name__)

# Binance allows 5 incoming messages a second per connection; stay under it.
MAX_CONTROL_PER_S = 4
# Streams named in the URL at connect time; the rest are subscribed by message (URL length).
URL_STREAMS = 100
PARAMS_PER_MESSAGE = 200


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    lifetime_s: float = binance.CONNECTION_LIFETIME_S - 15 * 60  # replace well before 24 h
    idle_probe_s: float = 10.0
    pong_timeout_s: float = 10.0
    open_timeout_s: float = 10.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    handover_wait_s: float = 10.0  # how long the new socket may take to deliver data
    handover_overlap_s: float = 0.5
    max_frame_bytes: int = 16 << 20  # bigger frames are refused by codec, not by the socket


@dataclass(eq=False)
class _Link:
    opened_at: float
    last_frame: float
    ws: Any = None
    first_data: asyncio.Event = field(default_factory=asyncio.Event)
    shutdown_notice: bool = False
    reader: asyncio.Task[None] | None = None


class StreamConnection:
    """Keeps `streams` subscribed on `ws_url`, calling `on_frame(frame, recv_ns)` for data."""

    def __init__(
        self,
        name: str,
        ws_url: str,
        on_frame: Callable[[bytes, int], object],
        on_lost: Callable[[set[str], str], None],
        settings: ConnectionSettings | None = None,
    ) -> None:
        self.name = name
        self.ws_url = ws_url
        self.streams: set[str] = set()
        self.settings = settings or ConnectionSettings()
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._control: asyncio.Queue[bytes] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._active: _Link | None = None
        self._links: set[_Link] = set()
        # Observability.
        self.connects = 0
        self.reconnects = 0
        self.handovers = 0
        self.stale = 0
        self.control_sent = 0
        self.frame_errors = 0
        self.errors: list[str] = []

    @property
    def connected(self) -> bool:
        return self._active is not None

    # --- subscriptions (safe to call any time; applied over the open socket) ---
    def subscribe(self, streams: Iterable[str]) -> None:
        new = [s for s in streams if s not in self.streams]
        self.streams.update(new)
        if self._active is not None:
            self._queue("SUBSCRIBE", new)

    def unsubscribe(self, streams: Iterable[str]) -> None:
        gone = [s for s in streams if s in self.streams]
        self.streams.difference_update(gone)
        if self._active is not None:
            self._queue("UNSUBSCRIBE", gone)

    def _queue(self, method: str, streams: list[str]) -> None:
        for i in range(0, len(streams), PARAMS_PER_MESSAGE):
            chunk = streams[i : i + PARAMS_PER_MESSAGE]
            self._control.put_nowait(binance.subscribe_message(method, chunk, next(self._ids)))

    def request_handover(self) -> None:
        """Replace the socket make-before-break (as on `serverShutdown`)."""
        if self._active is not None:
            self._active.shutdown_notice = True

    # --- running ---
    async def run(self) -> None:
        # Every record of this connection's tasks (and websockets' own) names it.
        with logs.log_context(connection=self.name):
            await self._run()

    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._send_control())
                tg.create_task(self._supervise())
        finally:
            for link in list(self._links):
                await self._close(link)

    async def _supervise(self) -> None:
        attempt = 0
        ever_connected = False
        while True:
            link = await self._open()
            if link is None:
                attempt += 1
                self.reconnects += 1
                await asyncio.sleep(
                    backoff(
                        attempt, base=self.settings.backoff_base_s, cap=self.settings.backoff_cap_s
                    )
                )
                continue
            attempt = 0
            if ever_connected and self.streams:
                # Frames were missed between the old socket and this one.
                log.warning(
                    "reconnected: resyncing %d streams",
                    len(self.streams),
                    extra={"event": "reconnect", "streams": len(self.streams)},
                )
                self._on_lost(set(self.streams), "reconnect")
            ever_connected = True
            while link is not None:
                self._active = link
                link = await self._serve(link)
            self._active = None

    async def _open(self) -> _Link | None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        in_url = sorted(self.streams)[:URL_STREAMS]
        url = binance.combined_url(self.ws_url, in_url)
        now = time.monotonic()
        link = _Link(now, now)
        try:
            link.ws = await asyncio.wait_for(
                connect(
                    url,
                    max_size=self.settings.max_frame_bytes,
                    ping_interval=None,  # our watchdog pings when the line goes quiet
                    compression=None,
                    open_timeout=self.settings.open_timeout_s,
                    close_timeout=2,
                    create_connection=functools.partial(  # type: ignore[arg-type]
                        inline_connection(),
                        on_text=functools.partial(self._on_text, link),
                        max_size=self.settings.max_frame_bytes,
                    ),
                ),
                self.settings.open_timeout_s + 1,
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            self._note(f"connect failed: {exc!r}", "connect_failed", logging.WARNING)
            return None
        link.opened_at = link.last_frame = time.monotonic()
        self._links.add(link)
        link.reader = asyncio.create_task(self._read(link), name=f"{self.name}-reader")
        self.connects += 1
        # Streams beyond the URL, and any (un)subscription made while we were connecting.
        missing = sorted(self.streams.difference(in_url))
        if missing:
            self._queue("SUBSCRIBE", missing)
        gone = sorted(set(in_url) - self.streams)
        if gone:
            self._queue("UNSUBSCRIBE", gone)
        return link

    async def _read(self, link: _Link) -> None:
        """Frames the inline path leaves to websockets (fragmented or binary messages), and
        the end of the connection."""
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                frame = await link.ws.recv(decode=False)
                self._on_text(link, frame)
        except ConnectionClosed as exc:
            self._note(f"closed: {exc!r}", "closed")

    def _on_text(self, link: _Link, frame: bytes) -> None:
        recv_ns = time.time_ns()
        link.last_frame = time.monotonic()
        try:
            if frame.startswith(b'{"stream"'):
                if not link.first_data.is_set():
                    link.first_data.set()
                self._on_frame(frame, recv_ns)
            else:
                self._on_control(link, frame, recv_ns)
        except Exception:
            # A bug, not bad input (the normalizer quarantines that): keep serving the others.
            self.frame_errors += 1
            log.exception(
                "%s: a frame could not be handled", self.name, extra={"connection": self.name}
            )

    def _on_control(self, link: _Link, frame: bytes, recv_ns: int) -> None:
        msg = binance.decode_frame(frame, recv_ns)
        if isinstance(msg, Control):
            if msg.kind == "server_shutdown":
                link.shutdown_notice = True
            elif msg.kind == "error":
                self._note(
                    f"request {msg.request_id} refused: {msg.detail}", "refused", logging.WARNING
                )
            return
        self._on_frame(frame, recv_ns)  # let the normalizer quarantine it

    async def _serve(self, link: _Link) -> _Link | None:
        """Watch one socket; return its replacement, or None once it is lost."""
        s = self.settings
        assert link.reader is not None
        while True:
            done, _ = await asyncio.wait({link.reader}, timeout=min(1.0, s.idle_probe_s / 2))
            if done:
                await self._close(link)
                return None
            now = time.monotonic()
            if link.shutdown_notice or now - link.opened_at > s.lifetime_s:
                successor = await self._handover(link)
                if successor is not None:
                    return successor
                link.opened_at = now  # could not open a successor: try again later
                link.shutdown_notice = False
            elif now - link.last_frame > s.idle_probe_s and not await self._alive(link):
                self.stale += 1
                self._note("stale: no pong", "stale", logging.WARNING)
                await self._close(link)
                return None

    async def _handover(self, old: _Link) -> _Link | None:
        new = await self._open()
        if new is None:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(new.first_data.wait(), self.settings.handover_wait_s)
        await asyncio.sleep(self.settings.handover_overlap_s)
        self.handovers += 1
        log.info("%s: handed over to a new socket", self.name, extra={"event": "handover"})
        await self._close(old)
        return new

    async def _alive(self, link: _Link) -> bool:
        from websockets.exceptions import WebSocketException

        try:
            waiter = await link.ws.ping()
            await asyncio.wait_for(waiter, self.settings.pong_timeout_s)
        except (TimeoutError, WebSocketException):
            return False
        link.last_frame = time.monotonic()
        return True

    async def _close(self, link: _Link) -> None:
        self._links.discard(link)
        if link.reader is not None and not link.reader.done():
            link.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link.reader
        with contextlib.suppress(Exception):
            await asyncio.wait_for(link.ws.close(), 2)

    async def _send_control(self) -> None:
        from websockets.exceptions import WebSocketException

        interval = 1.0 / MAX_CONTROL_PER_S
        while True:
            message = await self._control.get()
            link = self._active
            while link is None:
                await asyncio.sleep(0.1)
                link = self._active
            try:
                await link.ws.send(message.decode())
                self.control_sent += 1
            except (OSError, WebSocketException) as exc:
                # The socket died; the reconnect subscribes everything through its URL.
                self._note(f"control send failed: {exc!r}", "send_failed", logging.WARNING)
            await asyncio.sleep(interval)

    def _note(self, text: str, event: str, level: int = logging.INFO) -> None:
        log.log(level, "%s: %s", self.name, text, extra={"connection": self.name, "event": event})
        self.errors.append(text)
        del self.errors[:-20]
