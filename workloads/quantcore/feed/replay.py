"""A replay server that speaks Binance's protocol, so a shard cannot tell it from the exchange.

WS `/stream?streams=...` (combined streams, SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS, ping/pong,
at most 5 incoming messages a second) and REST `/api/v3/depth`, `/api/v3/exchangeInfo`,
`/api/v3/ticker/24hr`, serving recordings at recorded pace x `speed` (0 = as fast as possible).
The replay keeps its own true book per symbol, so a depth request at any moment gets a
consistent snapshot. Fault switches (`POST /_replay/fault/<kind>`): disconnect, stall, gap,
duplicate, reorder, malformed, shutdown (serverShutdown notice), throttle (HTTP 429).
The 24 h ticker's quote volumes are the recorded trades' until `POST /_replay/ticker` sets
some (a JSON object, symbol -> quote volume), so a test can change the volume ranking;
`DELETE /_replay/ticker` restores the recorded ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import sys
import time
from collections import Counter, defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from quantcore.feed import binance, copies
from quantcore.feed.book import BookSync, SyncState
from quantcore.feed.messages import DepthDiff, Rejected, Trade
from quantcore.feed.recording import Line, merged
from quantcore.feed.ticker import TickerOverrideError, parse_overrides

log = logging.getLogger(__name__)

# Each loop of a recording shifts every exchange id by this much, so ids keep growing, and
# every exchange time (event "E", trade "T") by the loop's period (loop_period_ms), so times do
# too: windows of exchange time (trade flow) move on with the loop instead of freezing.
LOOP_ID_OFFSET = 10**9
SEND_BUFFER_BYTES = 256 * 1024  # per websocket client
CATCH_UP_TIMEOUT_S = 5.0  # how long a speed-0 loop waits for its clients at the end
START_TIMEOUT_S = 30.0  # how long an interval waits for every symbol's client to sync
FAULT_KINDS = (
    "disconnect",
    "stall",
    "gap",
    "duplicate",
    "reorder",
    "malformed",
    "shutdown",
    "throttle",
)


@dataclass(eq=False)
class _Client:
    ws: web.WebSocketResponse
    streams: set[str]
    control_times: deque[float] = field(default_factory=lambda: deque(maxlen=16))
    stalled_until: float = 0.0


@dataclass
class _Faults:
    """Pending one-shot switches; symbol None means any symbol."""

    pending: Counter[tuple[str, str | None]] = field(default_factory=Counter)
    held: dict[str, bytes] = field(default_factory=dict)  # reorder: a diff waiting for the next
    throttle: int = 0
    armed: int = 0  # sum of `pending`: the timeline skips every check while it is 0

    def arm(self, kind: str, symbol: str | None, count: int) -> None:
        self.pending[(kind, symbol)] += count
        self.armed += count

    def take(self, kind: str, symbol: str) -> bool:
        for key in ((kind, symbol), (kind, None)):
            if self.pending[key] > 0:
                self.pending[key] -= 1
                self.armed -= 1
                return True
        return False


def _format_levels(prices: list[float], qtys: list[float]) -> list[list[str]]:
    return [[f"{p:.8f}", f"{q:.8f}"] for p, q in zip(prices, qtys, strict=True)]


class Replay:
    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        speed: float = 1.0,
        loop: bool = False,
        symbols: int | None = None,
        start_ns: int | None = None,
    ) -> None:
        """Serves the recordings `paths`; with `symbols`, that many symbols made of copies of
        them under other names (`quantcore.feed.copies`). With `start_ns`, the lines received
        before it are history: folded into the true book (so a depth request is answered with
        the book as of the start), never sent (quantcore.feed.archive writes such recordings)."""
        if symbols is None:
            self.lines: list[Line] = list(merged(*paths))
        else:
            self.lines = list(copies.copied_lines([Path(p) for p in paths], symbols))
        if not self.lines:
            raise ValueError("the recordings are empty")
        self.speed = speed
        self.loop = loop
        self.start_ns = start_ns or 0
        self.clients: set[_Client] = set()
        # Every client's streams, kept current: the timeline asks about each line it passes.
        self.wanted: frozenset[str] = frozenset()
        self._asked = asyncio.Event()  # a depth request or subscription change happened
        self._depth_asked: set[str] = set()  # symbols whose book a client has asked for
        self.faults = _Faults()
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self.loop_index = 0
        self.position = 0
        self.sent = 0
        self.rate_violations = 0
        self.depth_requests = 0
        self.used_weight: deque[tuple[float, int]] = deque()
        # Interned: millions of lines (with --symbols) share a few hundred stream names.
        self._streams = [sys.intern(_stream_of(line.frame)) for line in self.lines]
        self._shifted: dict[int, tuple[bytes, tuple[int, ...], tuple[bool, ...]]] = {}
        self.loop_period_ms = loop_period_ms(
            self.lines if symbols is None else list(merged(*paths))  # copies keep the times
        )
        self._diff = [s.count("@") >= 1 and s.split("@")[1] == "depth" for s in self._streams]
        self.symbols = sorted({line.symbol for line in self.lines if line.symbol})
        self._diff_streams = {  # symbol -> its diff-depth stream in the recording
            line.symbol: self._streams[i]
            for i, line in enumerate(self.lines)
            if line.symbol and self._diff[i]
        }
        self.tick_sizes = self._tick_sizes()
        self.volumes = self._volumes()
        self.quote_volume_overrides: dict[str, float] = {}  # POST /_replay/ticker
        self._truth: dict[str, BookSync] = {}
        self._waiting: defaultdict[str, list[asyncio.Future[bytes]]] = defaultdict(list)
        # The recording's own snapshot answers the first depth request of each loop, even a
        # late one (it stays valid for a client that buffered from the start): that is what
        # makes a replay reproduce the recording's counts exactly.
        self._recorded: dict[str, bytes] = {}
        self._recorded_served: set[str] = set()
        self._reset_truth()
        self._fold_history()

    # --- static facts of the recording ---
    def _tick_sizes(self) -> dict[str, float]:
        prices: defaultdict[str, list[str]] = defaultdict(list)
        for line in self.lines[:20_000]:
            if line.symbol and not line.is_snapshot and b"@depth" in line.frame[:48]:
                msg = binance.decode_frame(line.frame, line.recv_ns)
                if isinstance(msg, DepthDiff):  # a recording may hold bad frames on purpose
                    data = orjson.loads(line.frame)["data"]
                    prices[line.symbol].extend(p for p, _ in data["b"][:20])
        out = {s: binance.tick_size_from_prices(p) for s, p in prices.items()}
        out.update({s: t for s, t in binance.KNOWN_TICK_SIZES.items() if s in out})
        return out

    def _volumes(self) -> dict[str, dict[str, float]]:
        stats: defaultdict[str, dict[str, float]] = defaultdict(
            lambda: {"volume": 0.0, "quoteVolume": 0.0, "count": 0, "lastPrice": 0.0}
        )
        for line in self.lines:
            if line.symbol and b"@trade" in line.frame[:48]:
                msg = binance.decode_frame(line.frame, line.recv_ns)
                if not isinstance(msg, Trade):
                    continue
                p, q = msg.price, msg.qty
                s = stats[line.symbol]
                s["volume"] += q
                s["quoteVolume"] += p * q
                s["count"] += 1
                s["lastPrice"] = p
        return dict(stats)

    def _reset_truth(self) -> None:
        # levels=0: the true book answers depth requests from its OrderBook; a top-N copy per
        # applied diff (what a shard publishes) would be wasted work here.
        self._truth = {s: BookSync(s, levels=0, max_buffer=100_000) for s in self.symbols}
        # Frames not yet folded into the true book: it is brought up to date only when a
        # snapshot must be synthesized, so fast replays do not pay for a second book.
        self._pending: defaultdict[str, list[tuple[bytes, int, bool]]] = defaultdict(list)
        self._recorded = {}
        self._recorded_served = set()

    # --- the timeline ---
    async def play(self) -> None:
        await self.started.wait()
        if self.start_ns:
            await self._wait_for_start()
        first_ns = max(self.lines[0].recv_ns, self.start_ns)
        while True:
            offset = self.loop_index * LOOP_ID_OFFSET
            time_offset = self.loop_index * self.loop_period_ms
            t0 = time.monotonic()
            played = 0
            for i, line in enumerate(self.lines):
                if line.recv_ns < self.start_ns:
                    continue  # history: folded into the true book already (_fold_history)
                delay = 0.0
                if self.speed > 0:
                    due = t0 + (line.recv_ns - first_ns) / 1e9 / self.speed
                    delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                stream = self._streams[i]
                if not (line.is_snapshot or self._diff[i] or stream in self.wanted):
                    continue  # nobody listens: skip the work
                self.position = i
                played += 1
                if delay <= 0 and played % 64 == 0:
                    await asyncio.sleep(0)  # behind schedule: still let REST and control in
                frame = line.frame if offset == 0 else self._shift(i, offset, time_offset)
                if line.is_snapshot:
                    self._on_recorded_snapshot(line, frame)
                else:
                    await self._broadcast(line, frame, stream, self._diff[i])
            for symbol, held in list(self.faults.held.items()):
                await self._send_stream(held, _stream_of(held))
                del self.faults.held[symbol]
            if not self.loop:
                self.finished.set()
                return
            if self.speed <= 0:
                waited = time.monotonic()
                await self._wait_for_clients()
                log.debug(
                    "loop %d: waited %.3f s for clients", self.loop_index, time.monotonic() - waited
                )
            self.loop_index += 1
            self._reset_truth()
            self._fold_history()

    async def _wait_for_start(self) -> None:
        """An interval (`start_ns`) starts once every symbol's diff stream is listened to and
        its book asked for: the client syncs on the book as of the start and then gets every
        diff of the interval, so it makes an update for each, as the shard that took the
        interval in did. A client that never comes holds the start for START_TIMEOUT_S only."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(START_TIMEOUT_S):
                while True:
                    self._asked.clear()
                    if all(
                        stream in self.wanted and symbol in self._depth_asked
                        for symbol, stream in self._diff_streams.items()
                    ):
                        return
                    await self._asked.wait()

    async def _wait_for_clients(self) -> None:
        """Let clients catch up with a loop before the next one starts (speed 0 only).

        A recording loops in well under a second at full speed, about a client's snapshot
        round trip after the gap each loop starts with (plus what sits in the socket). So the
        next loop waits (a few seconds at most) until every diff stream listened to has had
        this loop's snapshot asked for. Otherwise a slower client could sync on the next
        loop's snapshot and drop the rest of this one, which is no exchange's behaviour.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CATCH_UP_TIMEOUT_S):  # a stalled client: go on anyway
                while True:
                    self._asked.clear()
                    if not any(
                        stream in self.wanted and symbol not in self._recorded_served
                        for symbol, stream in self._diff_streams.items()
                    ):
                        return
                    await self._asked.wait()  # set by a depth request or a subscription change

    def _fold_history(self) -> None:
        """The lines before the start go into the true book (snapshots and diffs), unsent: a
        depth request, even before the first line is played, gets the book as of the start."""
        offset = self.loop_index * LOOP_ID_OFFSET
        time_offset = self.loop_index * self.loop_period_ms
        for i, line in enumerate(self.lines):
            if line.recv_ns >= self.start_ns or line.symbol is None:
                continue
            if line.is_snapshot or self._diff[i]:
                frame = line.frame if offset == 0 else self._shift(i, offset, time_offset)
                self._pending[line.symbol].append((frame, line.recv_ns, line.is_snapshot))

    def _on_recorded_snapshot(self, line: Line, frame: bytes) -> None:
        symbol = line.symbol
        if symbol is None or symbol not in self._truth:
            return
        self._pending[symbol].append((frame, line.recv_ns, True))
        self._recorded[symbol] = frame
        # Requests that waited for the book get the recording's own response.
        for waiter in self._waiting.pop(symbol, []):
            if not waiter.done():
                waiter.set_result(frame)

    def _subscriptions_changed(self) -> None:
        self.wanted = frozenset(s for client in self.clients for s in client.streams)
        self._asked.set()

    def _shift(self, i: int, offset: int, time_offset: int) -> bytes:
        """Line `i`'s frame with `offset` added to its exchange ids and `time_offset` to its
        exchange times (parsed once per line)."""
        shifted = self._shifted.get(i)
        if shifted is None:
            shifted = self._shifted[i] = _id_template(self.lines[i].frame)
        return shift_frame(shifted, offset, time_offset)

    async def _broadcast(self, line: Line, frame: bytes, stream: str, is_diff: bool) -> None:
        symbol = line.symbol or ""
        if is_diff:
            self._pending[symbol].append((frame, line.recv_ns, False))
            faults = self.faults
            if not faults.armed and not faults.held:
                await self._send_stream(frame, stream)
                return
            if faults.take("gap", symbol):
                return
            if faults.take("malformed", symbol):
                frame = frame[: len(frame) // 2]
            if faults.take("reorder", symbol):
                faults.held[symbol] = frame
                return
            await self._send_stream(frame, stream)
            held = faults.held.pop(symbol, None)
            if held is not None:
                await self._send_stream(held, stream)
            if faults.take("duplicate", symbol):
                await self._send_stream(frame, stream)
            return
        await self._send_stream(frame, stream)

    async def _send_stream(self, frame: bytes, stream: str) -> None:
        now = time.monotonic()
        for client in list(self.clients):
            if stream in client.streams and client.stalled_until <= now and not client.ws.closed:
                try:
                    await client.ws.send_frame(frame, WSMsgType.TEXT)
                    self.sent += 1
                except (ConnectionError, RuntimeError):
                    self.clients.discard(client)
                    self._subscriptions_changed()

    # --- websocket ---
    async def ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            # A fixed, small send buffer (the kernel would grow it to megabytes): a fast replay
            # stays within a fraction of a loop of its client, so the snapshot a client asks
            # for after a loop boundary is that loop's, not the next one's.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        streams = {s for s in request.query.get("streams", "").split("/") if s}
        client = _Client(ws, streams)
        self.clients.add(client)
        self._subscriptions_changed()
        self.started.set()
        try:
            async for msg in ws:
                now = time.monotonic()
                if msg.type == WSMsgType.PING:
                    if client.stalled_until <= now:
                        await ws.pong(msg.data)
                    continue
                if msg.type != WSMsgType.TEXT:
                    continue
                client.control_times.append(now)
                recent = [t for t in client.control_times if now - t < 1.0]
                if len(recent) > binance.MAX_INCOMING_MESSAGES_PER_S:
                    # What the exchange does to a client that floods it.
                    self.rate_violations += 1
                    await ws.close(code=1008, message=b"Too many requests")
                    break
                await ws.send_str(self._control_reply(client, msg.data))
        finally:
            self.clients.discard(client)
            self._subscriptions_changed()
        return ws

    def _control_reply(self, client: _Client, text: str) -> str:
        try:
            req = orjson.loads(text)
            method, request_id = req["method"], req.get("id")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return orjson.dumps({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}).decode()
        params = req.get("params", [])
        if method == "SUBSCRIBE":
            client.streams.update(params)
            self._subscriptions_changed()
            result: Any = None
        elif method == "UNSUBSCRIBE":
            client.streams.difference_update(params)
            self._subscriptions_changed()
            result = None
        elif method == "LIST_SUBSCRIPTIONS":
            result = sorted(client.streams)
        else:
            return orjson.dumps(
                {"error": {"code": 2, "msg": "Invalid request"}, "id": request_id}
            ).decode()
        return orjson.dumps({"result": result, "id": request_id}).decode()

    # --- REST ---
    def _weight(self, weight: int) -> int:
        now = time.monotonic()
        self.used_weight.append((now, weight))
        while self.used_weight and now - self.used_weight[0][0] > 60:
            self.used_weight.popleft()
        return sum(w for _, w in self.used_weight)

    async def depth_handler(self, request: web.Request) -> web.Response:
        self.depth_requests += 1
        symbol = request.query.get("symbol", "").upper()
        self._depth_asked.add(symbol)
        self._asked.set()
        limit = int(request.query.get("limit", "100"))
        used = self._weight(binance.depth_weight(limit))
        headers = {binance.USED_WEIGHT_HEADER: str(used)}
        if self.faults.throttle > 0:
            self.faults.throttle -= 1
            headers["Retry-After"] = "1"
            body = {"code": binance.ERROR_TOO_MANY_REQUESTS, "msg": "Too many requests."}
            return web.json_response(body, status=binance.HTTP_TOO_MANY_REQUESTS, headers=headers)
        if symbol not in self._truth:
            return web.json_response(
                {"code": -1121, "msg": "Invalid symbol."}, status=400, headers=headers
            )
        if symbol not in self._recorded_served and symbol in self._recorded:
            self._recorded_served.add(symbol)
            self._asked.set()
            recorded = self._recorded[symbol]
            return web.Response(body=recorded, content_type="application/json", headers=headers)
        # Only now bring the true book up to date (it replays every frame since the last ask).
        truth = self._true_book(symbol)
        assert truth is not None
        if truth.state is not SyncState.LIVE:
            self._recorded_served.add(symbol)
            self._asked.set()
            waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self._waiting[symbol].append(waiter)
            body_bytes = await waiter
            return web.Response(body=body_bytes, content_type="application/json", headers=headers)
        bid_px, bid_qty = truth.book.bids(limit)
        ask_px, ask_qty = truth.book.asks(limit)
        doc = {
            "lastUpdateId": truth.last_update_id,
            "bids": _format_levels(bid_px, bid_qty),
            "asks": _format_levels(ask_px, ask_qty),
        }
        return web.Response(
            body=orjson.dumps(doc), content_type="application/json", headers=headers
        )

    def _true_book(self, symbol: str) -> BookSync | None:
        truth = self._truth.get(symbol)
        if truth is None:
            return None
        for frame, recv_ns, is_snapshot in self._pending.pop(symbol, []):
            if is_snapshot:
                snapshot = binance.decode_snapshot(frame, symbol, recv_ns)
                if not isinstance(snapshot, Rejected):
                    truth.on_snapshot(snapshot)
            else:
                msg = binance.decode_frame(frame, recv_ns)
                if isinstance(msg, DepthDiff):  # a bad frame changes nothing at the exchange
                    truth.on_diff(msg)
        return truth

    async def exchange_info_handler(self, request: web.Request) -> web.Response:
        wanted = set(self.symbols)
        if "symbol" in request.query:
            wanted = {request.query["symbol"].upper()}
        elif "symbols" in request.query:
            wanted = {s.upper() for s in orjson.loads(request.query["symbols"])}
        symbols = [
            {
                "symbol": s,
                "status": "TRADING",
                "filters": [
                    {
                        "filterType": "PRICE_FILTER",
                        "tickSize": f"{self.tick_sizes.get(s, 1e-8):.8f}",
                    }
                ],
            }
            for s in sorted(wanted & set(self.symbols))
        ]
        return web.json_response({"timezone": "UTC", "symbols": symbols})

    async def ticker_handler(self, request: web.Request) -> web.Response:
        def entry(symbol: str) -> dict[str, Any]:
            v = self.volumes.get(
                symbol, {"volume": 0.0, "quoteVolume": 0.0, "count": 0, "lastPrice": 0.0}
            )
            override = self.quote_volume_overrides.get(symbol)
            if override is not None:
                # The base volume follows at the last price, as if the extra quote volume
                # had traded there.
                price = v["lastPrice"]
                v = {**v, "quoteVolume": override, "volume": override / price if price else 0.0}
            return {
                "symbol": symbol,
                "lastPrice": f"{v['lastPrice']:.8f}",
                "volume": f"{v['volume']:.8f}",
                "quoteVolume": f"{v['quoteVolume']:.8f}",
                "count": int(v["count"]),
            }

        if "symbol" in request.query:
            return web.json_response(entry(request.query["symbol"].upper()))
        return web.json_response([entry(s) for s in self.symbols])

    async def ticker_override_handler(self, request: web.Request) -> web.Response:
        """POST: set quote volumes (symbol -> volume); DELETE: back to the recorded ones."""
        if request.method == "DELETE":
            self.quote_volume_overrides.clear()
            return web.json_response({"ok": True, "overrides": {}})
        try:
            overrides = parse_overrides(await request.read(), self.symbols)
        except TickerOverrideError as error:
            return web.json_response({"error": str(error)}, status=400)
        self.quote_volume_overrides.update(overrides)
        return web.json_response({"ok": True, "overrides": self.quote_volume_overrides})

    # --- fault switches ---
    async def fault_handler(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind not in FAULT_KINDS:
            return web.json_response(
                {"error": f"unknown fault {kind!r}", "kinds": FAULT_KINDS}, status=400
            )
        symbol = request.query.get("symbol")
        count = int(request.query.get("count", "1"))
        seconds = float(request.query.get("seconds", "5"))
        if kind == "disconnect":
            for client in list(self.clients):
                await client.ws.close(code=1001, message=b"replay disconnect")
        elif kind == "stall":
            until = time.monotonic() + seconds
            for client in self.clients:
                client.stalled_until = until
        elif kind == "shutdown":
            notice = orjson.dumps({"e": "serverShutdown", "E": time.time_ns() // 1_000_000})
            for client in list(self.clients):
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await client.ws.send_frame(notice, WSMsgType.TEXT)
        elif kind == "throttle":
            self.faults.throttle += count
        else:
            self.faults.arm(kind, symbol.upper() if symbol else None, count)
        return web.json_response({"ok": True, "kind": kind})

    async def status_handler(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "clients": len(self.clients),
                "subscriptions": sorted({s for c in self.clients for s in c.streams}),
                "position": self.position,
                "lines": len(self.lines),
                "loop": self.loop_index,
                "finished": self.finished.is_set(),
                "sent": self.sent,
                "rate_violations": self.rate_violations,
                "truth": {s: t.last_update_id for s in self.symbols if (t := self._true_book(s))},
            }
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/stream", self.ws_handler)
        app.router.add_get(binance.DEPTH_PATH, self.depth_handler)
        app.router.add_get(binance.EXCHANGE_INFO_PATH, self.exchange_info_handler)
        app.router.add_get(binance.TICKER_24H_PATH, self.ticker_handler)
        app.router.add_post("/_replay/fault/{kind}", self.fault_handler)
        app.router.add_post("/_replay/ticker", self.ticker_override_handler)
        app.router.add_delete("/_replay/ticker", self.ticker_override_handler)
        app.router.add_get("/_replay/status", self.status_handler)
        return app


def _stream_of(frame: bytes) -> str:
    if frame.startswith(b'{"stream":"'):
        end = frame.find(b'"', 11)
        return frame[11:end].decode()
    return ""


_ID_FIELDS = re.compile(rb'"(U|u|t|lastUpdateId|E|T)":(\d+)')
_TIME_FIELDS = (b"E", b"T")


def _id_template(frame: bytes) -> tuple[bytes, tuple[int, ...], tuple[bool, ...]]:
    """`frame` as a %-template with a `%d` for each exchange id (update ids, trade ids, snapshot
    id) and exchange time (event, trade), those numbers, and which of them are times: a later
    loop of the recording fills in the ids and times plus its offsets."""
    found = list(_ID_FIELDS.finditer(frame))
    numbers = tuple(int(m.group(2)) for m in found)
    is_time = tuple(m.group(1) in _TIME_FIELDS for m in found)
    template = _ID_FIELDS.sub(lambda m: b'"%s":%%d' % m.group(1), frame.replace(b"%", b"%%"))
    return template, numbers, is_time


def shift_frame(
    shifted: tuple[bytes, tuple[int, ...], tuple[bool, ...]], offset: int, time_offset: int
) -> bytes:
    template, numbers, is_time = shifted
    return template % tuple(
        n + (time_offset if t else offset) for n, t in zip(numbers, is_time, strict=True)
    )


def loop_period_ms(lines: Sequence[Line]) -> int:
    """How far each loop moves exchange times: past the recording's whole span of exchange times
    (so they keep increasing across loops) and of receive times (at speed 1 a loop lasts that
    long, so exchange time keeps pace with the clock). Deterministic: the recording decides."""
    low = high = None
    for line in lines:
        for m in _ID_FIELDS.finditer(line.frame):
            if m.group(1) in _TIME_FIELDS:
                value = int(m.group(2))
                low = value if low is None or value < low else low
                high = value if high is None or value > high else high
    times = 0 if low is None or high is None else high - low
    received = -(-(lines[-1].recv_ns - lines[0].recv_ns) // 1_000_000) if lines else 0
    return max(times, received) + 1


async def serve(replay: Replay, host: str, port: int) -> tuple[web.AppRunner, int]:
    import socket

    runner = web.AppRunner(replay.app(), access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))  # port 0: the kernel picks a free one, and we learn which
    site = web.SockSite(runner, sock)
    await site.start()
    return runner, sock.getsockname()[1]
