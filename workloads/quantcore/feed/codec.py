"""Number validation on the way in and record encoding on the way out (orjson, no pydantic).

Inbound: every price/quantity must be a decimal string that parses to a finite, sane, non-negative
float; anything else raises `Invalid` with a reason for the quarantine topic (`plain_levels` is the
bulk fast path for levels whose text already proves them sane). Outbound: the bytes
written to the book/trades/flow/quarantine topics, with exactly the field names of
`quantcore.events` (a unit test validates them against those models).
"""

from __future__ import annotations

from typing import Any

import orjson

from quantcore.feed.book import BookUpdate
from quantcore.feed.messages import Level, PartialDepth, Rejected, Trade
from quantcore.feed.tradeflow import WINDOWS_MS, Flow

# Bounds that no real market reaches; a value outside them is a corrupt frame, not a price.
MAX_PRICE = 1e12
MAX_QTY = 1e15
# Frames above this are refused before parsing (a full 5000-level snapshot is ~250 KB).
MAX_FRAME_BYTES = 1 << 20
# The quarantine topic keeps this much of an offending frame.
QUARANTINE_FRAME_BYTES = 4096


class Invalid(ValueError):
    """A frame that must not reach a book; `reason` is short and machine-readable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def levels(raw: Any, what: str) -> list[Level]:
    """[["price","qty"], ...] -> [(price, qty), ...]; qty 0 is allowed (it deletes a level)."""
    if type(raw) is not list:
        raise Invalid(f"{what}: not a list")
    out: list[Level] = []
    append = out.append
    for lvl in raw:
        if type(lvl) is not list or len(lvl) != 2:
            raise Invalid(f"{what}: level is not [price, qty]")
        p, q = lvl
        if type(p) is not str or type(q) is not str:
            raise Invalid(f"{what}: price/qty not a decimal string")
        try:
            price = float(p)
            qty = float(q)
        except ValueError:
            raise Invalid(f"{what}: unparsable number") from None
        # Chained comparisons are False for NaN, so this also refuses NaN and +-inf.
        if not 0.0 < price < MAX_PRICE:
            raise Invalid(f"{what}: price out of range ({p[:32]})")
        if not 0.0 <= qty < MAX_QTY:
            raise Invalid(f"{what}: quantity out of range ({q[:32]})")
        append((price, qty))
    return out


# Level text the fast path accepts: a JSON string holding an unsigned decimal with a point, and
# few enough digits that whatever it spells parses finite, below MAX_PRICE/MAX_QTY (11 and 14
# integer digits) and, when not all zeros, above zero (at most 20 decimals: no underflow). A
# leading zero ("01.5") is no JSON number: parsing refuses it and the frame goes the slow way.
# Anything else (exponents, signs, NaN, 1e400, too many digits) takes `levels`, which says why.
# (Possessive `+` quantifiers: nothing here needs backtracking, and sre runs faster without.)
PLAIN_LEVEL = rb'\["[0-9]{1,11}+\.[0-9]{1,20}+","[0-9]{1,14}+\.[0-9]{1,20}+"\]'
# The inside of a `[...]` list of such levels (possibly empty), as one regex group.
PLAIN_LEVELS = rb"((?:" + PLAIN_LEVEL + rb"(?:," + PLAIN_LEVEL + rb")*+)?+)"
_QUOTES_BRACKETS = b'"[]'


def plain_levels(bids: bytes, asks: bytes) -> tuple[list[Level], list[Level]] | None:
    """Both sides of a diff from text matched by PLAIN_LEVELS, parsed in one call.

    Returns None when a price is zero (the only insane value that text can spell) or a number
    has a leading zero: the caller then decodes the slow way. orjson parses a JSON number to
    the same correctly rounded float as `float()` parses the string, so both paths agree.
    """
    # '["1.5","2.0"],["1.4","0.0"]' -> '1.5,2.0,1.4,0.0': one flat JSON array of both sides.
    flat = b",".join(
        filter(
            None, (bids.translate(None, _QUOTES_BRACKETS), asks.translate(None, _QUOTES_BRACKETS))
        )
    )
    try:
        numbers: list[float] = orjson.loads(b"[" + flat + b"]")
    except orjson.JSONDecodeError:
        return None
    prices = numbers[0::2]
    qtys = numbers[1::2]
    if prices and 0.0 in prices:
        return None
    n = bids.count(b"[")  # one "[" per bid level: the text holds no other
    return list(zip(prices[:n], qtys[:n], strict=True)), list(
        zip(prices[n:], qtys[n:], strict=True)
    )


def price(raw: Any, what: str) -> float:
    if type(raw) is not str:
        raise Invalid(f"{what}: not a decimal string")
    try:
        value = float(raw)
    except ValueError:
        raise Invalid(f"{what}: unparsable number") from None
    if not 0.0 < value < MAX_PRICE:
        raise Invalid(f"{what}: out of range ({raw[:32]})")
    return value


def quantity(raw: Any, what: str) -> float:
    if type(raw) is not str:
        raise Invalid(f"{what}: not a decimal string")
    try:
        value = float(raw)
    except ValueError:
        raise Invalid(f"{what}: unparsable number") from None
    if not 0.0 <= value < MAX_QTY:
        raise Invalid(f"{what}: out of range ({raw[:32]})")
    return value


def integer(raw: Any, what: str) -> int:
    # bool is a subclass of int in Python; an exact type check refuses true/false as ids.
    if type(raw) is not int or raw < 0:
        raise Invalid(f"{what}: not a non-negative integer")
    return raw


def check_levels_order(bids: list[Level], asks: list[Level], what: str) -> None:
    """A pushed top-N book must be sorted best-first and uncrossed."""
    for i in range(1, len(bids)):
        if not bids[i][0] < bids[i - 1][0]:
            raise Invalid(f"{what}: bids not strictly decreasing")
    for i in range(1, len(asks)):
        if not asks[i][0] > asks[i - 1][0]:
            raise Invalid(f"{what}: asks not strictly increasing")
    if bids and asks and bids[0][0] >= asks[0][0]:
        raise Invalid(f"{what}: crossed book")


def book_record(update: BookUpdate, symbol: str, tick_size: float, publish_ns: int) -> bytes:
    diff = update.diff
    prev = update.prev_top
    return orjson.dumps(
        {
            "symbol": symbol,
            "seq": diff.final_id,
            "first_seq": diff.first_id,
            "event_time_ms": diff.event_time_ms,
            "recv_time_ns": diff.recv_ns,
            "publish_time_ns": publish_ns,
            "tick_size": tick_size,
            "bid_px": update.bid_px,
            "bid_qty": update.bid_qty,
            "ask_px": update.ask_px,
            "ask_qty": update.ask_qty,
            "prev_bid_px": prev[0] if prev else None,
            "prev_bid_qty": prev[1] if prev else None,
            "prev_ask_px": prev[2] if prev else None,
            "prev_ask_qty": prev[3] if prev else None,
        }
    )


def partial_book_record(
    depth: PartialDepth, prev: PartialDepth | None, tick_size: float, publish_ns: int
) -> bytes:
    """A pushed top-N book; it has no event time, so the receive time stands in for it."""

    def top(book: PartialDepth | None, side: str, i: int) -> float | None:
        if book is None:
            return None
        levels_ = book.bids if side == "b" else book.asks
        return levels_[0][i] if levels_ else None

    return orjson.dumps(
        {
            "symbol": depth.symbol,
            "seq": depth.last_update_id,
            "first_seq": depth.last_update_id,
            "event_time_ms": depth.recv_ns // 1_000_000,
            "recv_time_ns": depth.recv_ns,
            "publish_time_ns": publish_ns,
            "tick_size": tick_size,
            "bid_px": [p for p, _ in depth.bids],
            "bid_qty": [q for _, q in depth.bids],
            "ask_px": [p for p, _ in depth.asks],
            "ask_qty": [q for _, q in depth.asks],
            "prev_bid_px": top(prev, "b", 0),
            "prev_bid_qty": top(prev, "b", 1),
            "prev_ask_px": top(prev, "a", 0),
            "prev_ask_qty": top(prev, "a", 1),
        }
    )


def trade_record(trade: Trade, publish_ns: int) -> bytes:
    return orjson.dumps(
        {
            "symbol": trade.symbol,
            "trade_id": trade.trade_id,
            "price": trade.price,
            "qty": trade.qty,
            "buyer_is_maker": trade.buyer_is_maker,
            "trade_time_ms": trade.trade_time_ms,
            "event_time_ms": trade.event_time_ms,
            "recv_time_ns": trade.recv_ns,
            "publish_time_ns": publish_ns,
        }
    )


# Field-name suffixes of the flow windows ("1s", "5s", "30s"), in WINDOWS_MS order.
_FLOW_SUFFIXES = tuple(f"{w // 1000}s" for w in WINDOWS_MS)


def flow_record(flow: Flow, event_time_ms: int, recv_ns: int, publish_ns: int) -> bytes:
    """A trade-flow record: `event_time_ms`/`recv_ns` are the trade frame's (a tick's own time
    and emit time for a decay tick)."""
    doc: dict[str, Any] = {
        "symbol": flow.symbol,
        "sequence": flow.sequence,
        "as_of_ms": flow.as_of_ms,
    }
    for suffix, buy, sell in zip(_FLOW_SUFFIXES, flow.buy, flow.sell, strict=True):
        doc[f"buy_volume_{suffix}"] = buy
        doc[f"sell_volume_{suffix}"] = sell
    doc.update(
        last_trade_id=flow.last_trade_id,
        event_time_ms=event_time_ms,
        recv_time_ns=recv_ns,
        publish_time_ns=publish_ns,
        tick=flow.tick,
    )
    return orjson.dumps(doc)


def quarantine_record(rejected: Rejected) -> bytes:
    return orjson.dumps(
        {
            "symbol": rejected.symbol,
            "reason": rejected.reason,
            "stream": rejected.stream,
            "recv_time_ns": rejected.recv_ns,
            "frame": rejected.frame[:QUARANTINE_FRAME_BYTES].decode("utf-8", "replace"),
        }
    )


def raw_line(recv_ns: int, frame: bytes) -> bytes:
    """A raw-topic value: the recording format `<recv ns> <frame>`, so the log is a recording."""
    return b"%d %s" % (recv_ns, frame)
