"""Everything specific to Binance spot: stream names, frame shapes, REST depth, limits, ticks.

A second exchange would be a sibling module exposing the same few functions; nothing else in
the feed knows Binance's field names (`U`, `u`, `E`, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from quantcore.feed import codec
from quantcore.feed.codec import Invalid
from quantcore.feed.messages import (
    BookTicker,
    Control,
    DepthDiff,
    DepthSnapshot,
    Level,
    Message,
    PartialDepth,
    Rejected,
    Trade,
)

# --- connection limits (Binance "WebSocket Limits") ---
MAX_STREAMS_PER_CONNECTION = 1024
MAX_INCOMING_MESSAGES_PER_S = 5  # SUBSCRIBE/UNSUBSCRIBE/pong control messages per connection
CONNECTION_LIFETIME_S = 24 * 3600
SERVER_PING_INTERVAL_S = 20

# --- REST ---
DEPTH_PATH = "/api/v3/depth"
EXCHANGE_INFO_PATH = "/api/v3/exchangeInfo"
TICKER_24H_PATH = "/api/v3/ticker/24hr"
SNAPSHOT_LIMIT = 1000
REQUEST_WEIGHT_PER_MINUTE = 6000
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
HTTP_TOO_MANY_REQUESTS = 429  # back off for Retry-After seconds
HTTP_IP_BANNED = 418  # repeated 429s: banned for Retry-After seconds
ERROR_TOO_MANY_REQUESTS = -1003

# Tick sizes of the symbols we test with; others come from exchangeInfo's PRICE_FILTER.
KNOWN_TICK_SIZES: dict[str, float] = {"BTCUSDT": 0.01, "ETHUSDT": 0.01}

DIFF_DEPTH_SPEEDS = ("100ms", "1000ms")
PARTIAL_DEPTH_LEVELS = (5, 10, 20)

_DEPTH_FIELDS = frozenset({"e", "E", "s", "U", "u", "b", "a"})
_TRADE_REQUIRED = frozenset({"e", "E", "s", "t", "p", "q", "T", "m"})
_TRADE_FIELDS = _TRADE_REQUIRED | {"M", "b", "a"}  # `M` is undocumented; `b`/`a` were retired
_TICKER_REQUIRED = frozenset({"u", "s", "b", "B", "a", "A"})
_TICKER_FIELDS = _TICKER_REQUIRED | {"E", "e", "T"}
_PARTIAL_FIELDS = frozenset({"lastUpdateId", "bids", "asks"})


def depth_weight(limit: int) -> int:
    """Request weight of GET /api/v3/depth at `limit` levels."""
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


def depth_url(rest_url: str, symbol: str, limit: int = SNAPSHOT_LIMIT) -> str:
    return f"{rest_url.rstrip('/')}{DEPTH_PATH}?symbol={symbol.upper()}&limit={limit}"


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """Which streams a shard takes per symbol."""

    diff_depth: bool = True
    diff_speed: str = "100ms"
    partial_levels: int | None = None  # 5, 10 or 20: also take the pushed top-N book
    partial_speed: str = "100ms"
    trades: bool = True
    book_ticker: bool = True

    def streams(self, symbol: str) -> list[str]:
        s = symbol.lower()
        out = []
        if self.diff_depth:
            out.append(f"{s}@depth" if self.diff_speed == "1000ms" else f"{s}@depth@100ms")
        if self.partial_levels:
            suffix = "" if self.partial_speed == "1000ms" else "@100ms"
            out.append(f"{s}@depth{self.partial_levels}{suffix}")
        if self.trades:
            out.append(f"{s}@trade")
        if self.book_ticker:
            out.append(f"{s}@bookTicker")
        return out


def streams_for(symbols: Iterable[str], config: StreamConfig) -> list[str]:
    return [stream for symbol in symbols for stream in config.streams(symbol)]


def symbol_of_stream(stream: str) -> str:
    return stream.split("@", 1)[0].upper()


def subscribe_message(method: str, streams: list[str], request_id: int) -> bytes:
    """SUBSCRIBE / UNSUBSCRIBE JSON-RPC request."""
    return orjson.dumps({"method": method, "params": streams, "id": request_id})


def combined_url(ws_url: str, streams: list[str]) -> str:
    """The combined-stream endpoint, with the initial streams in the query string."""
    base = ws_url.rstrip("/")
    if not base.endswith("/stream"):
        base += "/stream"
    return f"{base}?streams={'/'.join(streams)}" if streams else base


# stream name -> (SYMBOL, kind, partial levels); parsed once per name.
_stream_cache: dict[str, tuple[str, str, int]] = {}


def _stream_kind(stream: str) -> tuple[str, str, int]:
    cached = _stream_cache.get(stream)
    if cached is not None:
        return cached
    parts = stream.split("@")
    symbol = parts[0].upper()
    kind = parts[1] if len(parts) > 1 else ""
    levels = 0
    if kind.startswith("depth") and kind != "depth":
        digits = kind[5:]
        if digits.isdigit() and int(digits) in PARTIAL_DEPTH_LEVELS:
            kind, levels = "partial", int(digits)
        else:
            kind = "?"
    result = (symbol, kind, levels)
    if len(_stream_cache) < 100_000:
        _stream_cache[stream] = result
    return result


# A diff frame exactly as Binance writes it (key order, no spaces, plain decimals). One match
# proves every field `_depth_diff` checks, so it skips building a dict of 60-odd strings; any
# other spelling (or a bad value) misses it and takes the general path, which says why.
_ID = rb"(0|[1-9][0-9]{0,17}+)"  # a JSON integer that fits in 64 bits
_CANONICAL_DIFF = re.compile(
    rb'\{"stream":"([a-z0-9]{1,40})@depth(?:@100ms)?","data":\{"e":"depthUpdate","E":' + _ID
    + rb',"s":"([A-Z0-9]{1,40})","U":' + _ID + rb',"u":' + _ID
    + rb',"b":\[' + codec.PLAIN_LEVELS + rb'\],"a":\[' + codec.PLAIN_LEVELS + rb"\]\}\}"
).fullmatch  # fmt: skip


def python_parse_depth_diff(
    frame: bytes,
) -> tuple[str, int, int, int, list[Level], list[Level]] | None:
    """(symbol, U, u, E, bids, asks) of a canonical diff frame; None for any other text.

    The reference implementation: `parse_depth_diff` is its compiled twin (_depth_diff.c)
    when the build compiled it, and this function otherwise.
    """
    match = _CANONICAL_DIFF(frame)
    if match is None:
        return None
    stream_symbol, event_ms, symbol, first, final, bids, asks = match.groups()
    if symbol != stream_symbol.upper() or int(first) > int(final):
        return None
    levels = codec.plain_levels(bids, asks)
    if levels is None:
        return None
    return symbol.decode(), int(first), int(final), int(event_ms), *levels


if TYPE_CHECKING:
    parse_depth_diff = python_parse_depth_diff
else:
    try:  # built by hatch_build.py; the fast-path tests hold the two to the same results
        from quantcore.feed._depth_diff import parse as parse_depth_diff
    except ImportError:
        parse_depth_diff = python_parse_depth_diff


def _canonical_depth_diff(frame: bytes, recv_ns: int) -> DepthDiff | None:
    """The fast path for a canonical diff frame; None sends it down the general path."""
    parsed = parse_depth_diff(frame)
    if parsed is None:
        return None
    symbol, first, final, event_ms, bids, asks = parsed
    return DepthDiff(symbol, first, final, event_ms, recv_ns, bids, asks)


def decode_frame(frame: bytes, recv_ns: int) -> Message:
    """One websocket text frame -> a validated message, or `Rejected` with the reason."""
    if len(frame) > codec.MAX_FRAME_BYTES:
        return Rejected("oversized frame", None, None, recv_ns, frame)
    diff = _canonical_depth_diff(frame, recv_ns)
    if diff is not None:
        return diff
    try:
        doc = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        # orjson refuses NaN, Infinity and 1e400 literals here (Python's json would accept them).
        return Rejected(f"invalid json: {exc}"[:200], None, None, recv_ns, frame)
    if type(doc) is not dict:
        return Rejected("frame is not an object", None, None, recv_ns, frame)
    stream = doc.get("stream")
    if stream is None:
        return _decode_control(doc, frame, recv_ns)
    if type(stream) is not str or len(doc) != 2 or "data" not in doc:
        return Rejected("malformed combined-stream envelope", None, None, recv_ns, frame)
    symbol, kind, _levels = _stream_kind(stream)
    data = doc["data"]
    try:
        if type(data) is not dict:
            raise Invalid("data is not an object")
        if kind == "depth":
            return _depth_diff(data, symbol, recv_ns)
        if kind == "trade":
            return _trade(data, symbol, recv_ns)
        if kind == "bookTicker":
            return _book_ticker(data, symbol, recv_ns)
        if kind == "partial":
            return _partial(data, symbol, recv_ns)
        if data.get("e") == "serverShutdown":
            return Control("server_shutdown", None, stream)
        raise Invalid(f"unknown stream {stream[:64]!r}")
    except Invalid as exc:
        return Rejected(exc.reason, symbol, stream, recv_ns, frame)


def _decode_control(doc: dict[str, Any], frame: bytes, recv_ns: int) -> Message:
    if doc.get("e") == "serverShutdown":
        return Control("server_shutdown", None, frame.decode("utf-8", "replace"))
    request_id = doc.get("id")
    rid = request_id if type(request_id) is int else None
    if "error" in doc:
        return Control("error", rid, orjson.dumps(doc["error"]).decode())
    if "result" in doc:
        return Control("result", rid, orjson.dumps(doc["result"]).decode())
    return Rejected("unknown frame", None, None, recv_ns, frame)


def _check_fields(data: dict[str, Any], allowed: frozenset[str], required: frozenset[str]) -> None:
    keys = data.keys()
    if keys - allowed:
        raise Invalid(f"unknown field(s) {sorted(keys - allowed)[:5]}")
    if required - keys:
        raise Invalid(f"missing field(s) {sorted(required - keys)}")


def _check_symbol(data: dict[str, Any], symbol: str) -> None:
    if data["s"] != symbol:
        raise Invalid(f"symbol {str(data['s'])[:20]!r} does not match its stream")


def _depth_diff(data: dict[str, Any], symbol: str, recv_ns: int) -> DepthDiff:
    if data.keys() != _DEPTH_FIELDS:
        _check_fields(data, _DEPTH_FIELDS, _DEPTH_FIELDS)
    if data["e"] != "depthUpdate":
        raise Invalid("event type is not depthUpdate")
    _check_symbol(data, symbol)
    first = codec.integer(data["U"], "U")
    final = codec.integer(data["u"], "u")
    if first > final:
        raise Invalid("U > u")
    return DepthDiff(
        symbol,
        first,
        final,
        codec.integer(data["E"], "E"),
        recv_ns,
        codec.levels(data["b"], "bids"),
        codec.levels(data["a"], "asks"),
    )


def _trade(data: dict[str, Any], symbol: str, recv_ns: int) -> Trade:
    _check_fields(data, _TRADE_FIELDS, _TRADE_REQUIRED)
    if data["e"] != "trade":
        raise Invalid("event type is not trade")
    _check_symbol(data, symbol)
    maker = data["m"]
    if type(maker) is not bool:
        raise Invalid("m: not a boolean")
    qty = codec.quantity(data["q"], "qty")
    if qty == 0.0:
        raise Invalid("qty: zero")
    return Trade(
        symbol,
        codec.integer(data["t"], "t"),
        codec.price(data["p"], "price"),
        qty,
        maker,
        codec.integer(data["T"], "T"),
        codec.integer(data["E"], "E"),
        recv_ns,
    )


def _book_ticker(data: dict[str, Any], symbol: str, recv_ns: int) -> BookTicker:
    if data.keys() != _TICKER_REQUIRED:  # the spot stream's exact fields skip the set algebra
        _check_fields(data, _TICKER_FIELDS, _TICKER_REQUIRED)
    _check_symbol(data, symbol)
    bid = codec.price(data["b"], "bid")
    ask = codec.price(data["a"], "ask")
    if bid >= ask:
        raise Invalid("crossed book")
    return BookTicker(
        symbol,
        codec.integer(data["u"], "u"),
        bid,
        codec.quantity(data["B"], "bid qty"),
        ask,
        codec.quantity(data["A"], "ask qty"),
        recv_ns,
    )


def _partial(data: dict[str, Any], symbol: str, recv_ns: int) -> PartialDepth:
    _check_fields(data, _PARTIAL_FIELDS, _PARTIAL_FIELDS)
    bids = codec.levels(data["bids"], "bids")
    asks = codec.levels(data["asks"], "asks")
    codec.check_levels_order(bids, asks, "partial depth")
    return PartialDepth(
        symbol, codec.integer(data["lastUpdateId"], "lastUpdateId"), recv_ns, bids, asks
    )


def decode_snapshot(body: bytes, symbol: str, recv_ns: int) -> DepthSnapshot | Rejected:
    """The REST depth response `{"lastUpdateId", "bids", "asks"}`."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return Rejected(f"invalid json: {exc}"[:200], symbol, DEPTH_PATH, recv_ns, body)
    try:
        if type(doc) is not dict:
            raise Invalid("snapshot is not an object")
        _check_fields(doc, _PARTIAL_FIELDS, _PARTIAL_FIELDS)
        bids = codec.levels(doc["bids"], "bids")
        asks = codec.levels(doc["asks"], "asks")
        codec.check_levels_order(bids, asks, "snapshot")
        if any(q == 0.0 for _, q in bids) or any(q == 0.0 for _, q in asks):
            raise Invalid("snapshot: zero quantity level")
        return DepthSnapshot(
            symbol, codec.integer(doc["lastUpdateId"], "lastUpdateId"), recv_ns, bids, asks
        )
    except Invalid as exc:
        return Rejected(exc.reason, symbol, DEPTH_PATH, recv_ns, body)


SNAPSHOT_PREFIX = b'{"lastUpdateId"'


def is_snapshot_body(frame: bytes) -> bool:
    """A bare REST depth response as the recordings (recordings/binance-spot) store it (no stream envelope)."""
    return frame.startswith(SNAPSHOT_PREFIX)


def tick_sizes(exchange_info: dict[str, Any]) -> dict[str, float]:
    """symbol -> tickSize from an /api/v3/exchangeInfo response."""
    out: dict[str, float] = {}
    for entry in exchange_info.get("symbols", []):
        for f in entry.get("filters", []):
            if f.get("filterType") == "PRICE_FILTER":
                tick = float(f["tickSize"])
                if tick > 0:
                    out[str(entry["symbol"])] = tick
    return out


def tick_size_from_prices(prices: Iterable[str]) -> float:
    """Fallback: the finest decimal step seen in price strings with trailing zeros stripped."""
    decimals = 0
    for p in prices:
        frac = p.partition(".")[2].rstrip("0")
        decimals = max(decimals, len(frac))
    return 10.0**-decimals
