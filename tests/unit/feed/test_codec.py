"""Bad input is refused with a reason (never reaches a book); good records match the contract."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcore.events import BookRecord, QuarantineRecord, TradeFlowRecord, TradeRecord
from quantcore.feed import binance, codec
from quantcore.feed.book import BookSync
from quantcore.feed.messages import (
    BookTicker,
    Control,
    DepthDiff,
    DepthSnapshot,
    PartialDepth,
    Rejected,
    Trade,
)
from quantcore.feed.normalizer import BOOK, FLOW, QUARANTINE, RAW, TRADES, Normalizer

DIFF = {
    "e": "depthUpdate",
    "E": 1723161255208,
    "s": "BTCUSDT",
    "U": 11,
    "u": 12,
    "b": [["61837.63000000", "3.78826000"]],
    "a": [["61837.64000000", "0.00000000"]],
}


def frame(data: object, stream: str = "btcusdt@depth@100ms") -> bytes:
    return orjson.dumps({"stream": stream, "data": data})


def with_(**changes: object) -> dict:
    d = dict(DIFF)
    d.update(changes)
    return d


def test_a_good_diff_decodes() -> None:
    msg = binance.decode_frame(frame(DIFF), 7)
    assert msg == DepthDiff(
        "BTCUSDT", 11, 12, 1723161255208, 7, [(61837.63, 3.78826)], [(61837.64, 0.0)]
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (frame(with_(b=[["NaN", "1"]])), "bids: price out of range"),
        (frame(with_(b=[["1e400", "1"]])), "bids: price out of range"),
        (frame(with_(a=[["100.0", "inf"]])), "asks: quantity out of range"),
        (frame(with_(a=[["100.0", "-0.5"]])), "asks: quantity out of range"),
        (frame(with_(a=[["-100.0", "1"]])), "asks: price out of range"),
        (frame(with_(a=[["1e13", "1"]])), "asks: price out of range"),
        (frame(with_(a=[["abc", "1"]])), "asks: unparsable number"),
        (frame(with_(a=[[100.0, "1"]])), "asks: price/qty not a decimal string"),
        (frame(with_(a=[["100.0", "1", "2"]])), "asks: level is not [price, qty]"),
        (frame(with_(a="x")), "asks: not a list"),
        (frame(with_(U=13)), "U > u"),
        (frame(with_(u=True)), "u: not a non-negative integer"),
        (frame(with_(s="ETHUSDT")), "symbol 'ETHUSDT' does not match its stream"),
        (frame(with_(x=1)), "unknown field(s) ['x']"),
        (frame({k: v for k, v in DIFF.items() if k != "U"}), "missing field(s) ['U']"),
        (frame(DIFF, stream="btcusdt@kline_1m"), "unknown stream 'btcusdt@kline_1m'"),
    ],
)
def test_bad_diffs_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    msg = binance.decode_frame(raw, 1)
    assert isinstance(msg, Rejected)
    assert msg.reason.startswith(reason)
    assert msg.frame == raw


@pytest.mark.parametrize(
    "raw",
    [
        # Python's json accepts these literals; the feed must not.
        b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"b":[[NaN,1]],"a":[]}}',
        b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":1e400}}',
        b"not json",
        b'{"stream":"btcusdt@depth@100ms","data":',
    ],
)
def test_unparsable_frames_are_rejected(raw: bytes) -> None:
    msg = binance.decode_frame(raw, 1)
    assert isinstance(msg, Rejected)
    assert msg.reason.startswith("invalid json")


def test_oversized_frames_are_refused_before_parsing() -> None:
    raw = frame(with_(b=[["1.0", "1.0"]] * 80_000))
    assert len(raw) > codec.MAX_FRAME_BYTES
    msg = binance.decode_frame(raw, 1)
    assert isinstance(msg, Rejected)
    assert msg.reason == "oversized frame"


def test_other_streams_and_control_frames() -> None:
    trade = {
        "e": "trade",
        "E": 5,
        "s": "BTCUSDT",
        "t": 9,
        "p": "1.5",
        "q": "2",
        "T": 4,
        "m": True,
        "M": True,
    }
    assert binance.decode_frame(frame(trade, "btcusdt@trade"), 3) == Trade(
        "BTCUSDT", 9, 1.5, 2.0, True, 4, 5, 3
    )
    ticker = {"u": 1, "s": "BTCUSDT", "b": "1.0", "B": "2", "a": "1.1", "A": "3"}
    assert binance.decode_frame(frame(ticker, "btcusdt@bookTicker"), 3) == BookTicker(
        "BTCUSDT", 1, 1.0, 2.0, 1.1, 3.0, 3
    )
    crossed = dict(ticker, b="1.2")
    assert binance.decode_frame(frame(crossed, "btcusdt@bookTicker"), 3).reason == "crossed book"  # type: ignore[union-attr]
    partial = {"lastUpdateId": 8, "bids": [["2", "1"], ["1", "1"]], "asks": [["3", "1"]]}
    assert binance.decode_frame(frame(partial, "btcusdt@depth5@100ms"), 3) == PartialDepth(
        "BTCUSDT", 8, 3, [(2.0, 1.0), (1.0, 1.0)], [(3.0, 1.0)]
    )
    unsorted = dict(partial, bids=[["1", "1"], ["2", "1"]])
    assert isinstance(binance.decode_frame(frame(unsorted, "btcusdt@depth5"), 3), Rejected)
    assert binance.decode_frame(b'{"result":null,"id":4}', 0) == Control("result", 4, "null")
    err = binance.decode_frame(b'{"error":{"code":2,"msg":"Invalid request"},"id":5}', 0)
    assert isinstance(err, Control)
    assert err.kind == "error"
    assert err.request_id == 5
    shutdown = binance.decode_frame(b'{"e":"serverShutdown","E":1}', 0)
    assert isinstance(shutdown, Control)
    assert shutdown.kind == "server_shutdown"


def test_snapshot_decoding() -> None:
    body = b'{"lastUpdateId":10,"bids":[["2.0","1.0"]],"asks":[["3.0","1.5"]]}'
    assert binance.decode_snapshot(body, "BTCUSDT", 4) == DepthSnapshot(
        "BTCUSDT", 10, 4, [(2.0, 1.0)], [(3.0, 1.5)]
    )
    crossed = b'{"lastUpdateId":10,"bids":[["3.0","1.0"]],"asks":[["3.0","1.5"]]}'
    assert isinstance(binance.decode_snapshot(crossed, "BTCUSDT", 4), Rejected)


def test_encoded_records_validate_against_the_contract() -> None:
    sync = BookSync("BTCUSDT", levels=3)
    sync.on_snapshot(DepthSnapshot("BTCUSDT", 10, 0, [(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.0)]))
    first = sync.on_diff(DepthDiff("BTCUSDT", 11, 11, 5, 6, [(100.0, 0.5)], [])).updates[0]
    second = sync.on_diff(DepthDiff("BTCUSDT", 12, 13, 7, 8, [], [(100.5, 1.0)])).updates[0]
    a = BookRecord.model_validate_json(codec.book_record(first, "BTCUSDT", 0.01, 9))
    b = BookRecord.model_validate_json(codec.book_record(second, "BTCUSDT", 0.01, 10))
    assert (a.seq, a.first_seq, a.prev_bid_px, a.bid_qty) == (11, 11, None, [0.5, 2.0])
    assert (b.prev_bid_px, b.prev_bid_qty, b.prev_ask_px, b.ask_px) == (
        100.0,
        0.5,
        101.0,
        [100.5, 101.0],
    )
    t = TradeRecord.model_validate_json(
        codec.trade_record(Trade("BTCUSDT", 1, 2.0, 3.0, False, 4, 5, 6), 7)
    )
    assert t.publish_time_ns == 7
    assert not t.buyer_is_maker
    q = QuarantineRecord.model_validate_json(
        codec.quarantine_record(Rejected("x", None, None, 1, b"\xff" * 10_000))
    )
    assert len(q.frame) == codec.QUARANTINE_FRAME_BYTES
    depth = PartialDepth("BTCUSDT", 8, 3_000_000, [(2.0, 1.0)], [(3.0, 1.0)])
    p = BookRecord.model_validate_json(codec.partial_book_record(depth, depth, 0.01, 4))
    assert p.event_time_ms == 3
    assert p.prev_ask_px == 3.0


def test_the_normalizer_quarantines_bad_frames_and_keeps_serving() -> None:
    out: list[tuple[str, str | None, bytes]] = []
    norm = Normalizer(binance, lambda k, s, v: out.append((k, s, v)), clock=lambda: 99)
    norm.add_symbol("BTCUSDT")
    norm.on_snapshot_body(
        b'{"lastUpdateId":10,"bids":[["100.0","1.0"]],"asks":[["101.0","1.0"]]}', "BTCUSDT", 1
    )
    norm.on_frame(frame(with_(U=11, u=11, b=[["100.0", "1.5"]], a=[])), 2)
    norm.on_frame(frame(with_(U=12, u=12, b=[["NaN", "1"]])), 2)  # lost: the next diff gaps
    norm.on_frame(frame(with_(U=13, u=13, b=[["100.0", "2.0"]], a=[])), 3)
    kinds = [k for k, _, _ in out]
    # snapshot, diff, book, reject, diff, reset marker
    assert kinds == [RAW, RAW, BOOK, QUARANTINE, RAW, RAW]
    assert orjson.loads(out[-1][2].split(b" ", 1)[1])["reason"] == "gap"
    assert norm.wants_snapshot("BTCUSDT")
    assert norm.quarantined["bids"] == 1
    out.clear()
    norm.on_snapshot_body(
        b'{"lastUpdateId":12,"bids":[["100.0","1.0"]],"asks":[["101.0","1.0"]]}', "BTCUSDT", 4
    )
    assert [k for k, _, _ in out] == [RAW, BOOK]
    assert BookRecord.model_validate_json(out[1][2]).bid_qty == [2.0]
    out.clear()
    trade = {"e": "trade", "E": 5, "s": "BTCUSDT", "t": 9, "p": "1.5", "q": "2", "T": 4, "m": True}
    norm.on_frame(frame(trade, "btcusdt@trade"), 5)
    norm.on_frame(frame(dict(trade, s="ETHUSDT"), "ethusdt@trade"), 5)  # not ours
    assert [k for k, _, _ in out] == [RAW, TRADES]
    assert norm.unrouted == 1


# --- the canonical-diff fast path must agree with the general decoder on every frame ---

# Decimal strings around every edge the fast path's text rules reason about: digit counts at
# the price/quantity bounds, rounding up to a bound, underflow, zeros, and what float() takes
# but the fast path must leave to the general one (signs, exponents, spaces, NaN, inf).
_edge_numbers = st.sampled_from(
    [
        "0.00000000",
        "0.00000001",
        "1.5",
        "61837.63000000",
        "99999999999.99999999999999999999",
        "999999999999.99999",
        "999999999999.9999",
        "1000000000000.0",
        "99999999999999.99999999999999999999",
        "999999999999999.99999",
        "0." + "0" * 19 + "1",
        "0." + "0" * 400 + "1",
        "01.5",
        "00000000000.5",
        "012345678901.5",
        "1.",
        ".5",
        "5",
        "-1.0",
        "+1.0",
        "1e5",
        "1e400",
        "NaN",
        "inf",
        " 1.5",
        "1_000.0",
        "",
    ]
)
_plain_numbers = st.builds(
    lambda i, f: f"{i}.{f}",
    st.integers(min_value=0, max_value=10**13),
    st.text("0123456789", min_size=1, max_size=21),
)
_number = st.one_of(_edge_numbers, _plain_numbers)
_levels = st.lists(st.lists(_number, min_size=2, max_size=2), max_size=6)


def _general(raw: bytes) -> object:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(binance, "_canonical_depth_diff", lambda frame, recv_ns: None)
        return binance.decode_frame(raw, 7)


# The compiled diff parser (when built) and its Python reference.
PARSERS = sorted(
    {binance.parse_depth_diff, binance.python_parse_depth_diff}, key=lambda f: f.__module__
)


@pytest.mark.parametrize("parser", PARSERS, ids=lambda f: f.__module__)
@settings(max_examples=400, deadline=None)
@given(_levels, _levels, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_the_fast_path_decodes_exactly_like_the_general_path(
    parser: object, bids: list[list[str]], asks: list[list[str]], first: int, final: int
) -> None:
    raw = frame(with_(b=bids, a=asks, U=first, u=final))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(binance, "parse_depth_diff", parser)
        fast = binance.decode_frame(raw, 7)
    assert fast == _general(raw)
    assert parser(raw) == binance.python_parse_depth_diff(raw)  # type: ignore[operator]
    if isinstance(fast, DepthDiff):
        assert all(type(x) is float for level in fast.bids + fast.asks for x in level)


@pytest.mark.parametrize(
    "raw",
    [
        frame(DIFF),
        frame(DIFF, "btcusdt@depth"),
        frame(with_(b=[], a=[])),
        frame(with_(s="ETHUSDT")),  # symbol disagrees with the stream
        frame(with_(U=13)),  # U > u
        frame(with_(e="trade")),
        frame(with_(x=1)),  # unknown field
        frame({k: v for k, v in DIFF.items() if k != "E"}),  # missing field
        frame(with_(E=True)),
        frame(with_(b=[["61837.63000000", "1.0", "2.0"]])),
        frame(with_(b=[["61837.63000000", 1.0]])),
        frame(DIFF).replace(b'"U":11', b'"U":011'),
        frame(DIFF).replace(b'"U":11', b'"U":11 '),
        frame(DIFF).replace(b'"b":[[', b'"b": [['),
        frame(DIFF, "btcusdt@depth@250ms"),
        frame(DIFF, "BTCUSDT@depth"),  # the stream name is lower case
        frame(with_(s="btcusdt")),
        frame(with_(s="B" * 41), "b" * 41 + "@depth"),  # symbols have at most 40 characters
        frame(with_(s="B" * 40), "b" * 40 + "@depth"),
        frame(with_(U=10**18, u=10**18)),  # 19 digits: beyond the fast path's ids
        frame(with_(U=10**17, u=10**17)),
        frame(with_(E=0, U=0, u=0)),
        frame(DIFF) + b" ",
        frame(DIFF).replace(b'"]],"a"', b'"],],"a"'),  # a trailing comma in a level list
        frame(DIFF).replace(b'"]],"a"', b'"]]],"a"'),
    ],
)
@pytest.mark.parametrize("parser", PARSERS, ids=lambda f: f.__module__)
def test_the_fast_path_agrees_on_odd_frames(parser: object, raw: bytes) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(binance, "parse_depth_diff", parser)
        assert binance.decode_frame(raw, 7) == _general(raw)
    assert parser(raw) == binance.python_parse_depth_diff(raw)  # type: ignore[operator]


@pytest.mark.parametrize("parser", PARSERS, ids=lambda f: f.__module__)
def test_binance_diffs_take_the_fast_path(parser: object) -> None:
    # Frames as the exchange spells them (the recordings' form) never build a dict.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(binance, "parse_depth_diff", parser)
        assert binance._canonical_depth_diff(frame(DIFF), 7) == _general(frame(DIFF))
        assert binance._canonical_depth_diff(frame(with_(b=[], a=[])), 7) is not None
        assert binance._canonical_depth_diff(frame(with_(b=[["0.00000000", "1.0"]])), 7) is None


def test_a_symbol_is_live_once_its_book_is_synced_and_published_since_it_was_added() -> None:
    out: list[tuple[str, str | None, bytes]] = []
    norm = Normalizer(
        binance, lambda k, s, v: out.append((k, s, v)), clock=lambda: 99, trade_flow=False
    )
    snap = b'{"lastUpdateId":10,"bids":[["100.0","1.0"]],"asks":[["101.0","1.0"]]}'
    norm.add_symbol("BTCUSDT")
    assert norm.live_symbols() == []
    norm.on_snapshot_body(snap, "BTCUSDT", 1)  # loaded, waiting for the straddling diff
    assert norm.live_symbols() == []
    norm.on_frame(frame(with_(U=11, u=11, b=[["100.0", "1.5"]], a=[])), 2)
    assert out[-1][0] == BOOK
    assert norm.live_symbols() == ["BTCUSDT"]
    norm.on_frame(frame(with_(U=13, u=13, b=[["100.0", "2.0"]], a=[])), 3)  # a gap: resync
    assert norm.live_symbols() == []
    norm.on_snapshot_body(snap.replace(b":10,", b":13,"), "BTCUSDT", 4)
    norm.on_frame(frame(with_(U=14, u=14, b=[["100.0", "2.5"]], a=[])), 5)
    assert norm.live_symbols() == ["BTCUSDT"]
    # Dropped and added again (a handover back): not live until it publishes again.
    norm.remove_symbol("BTCUSDT")
    norm.add_symbol("BTCUSDT")
    assert norm.live_symbols() == []


def trade(trade_id: int, time_ms: int, qty: str = "0.5", maker: bool = False) -> bytes:
    data = {"e": "trade", "E": time_ms + 1, "s": "BTCUSDT", "t": trade_id, "p": "100.0",
            "q": qty, "T": time_ms, "m": maker, "M": True}  # fmt: skip
    return frame(data, "btcusdt@trade")


def test_trade_flow_is_published_and_live_only_once_its_windows_are_covered() -> None:
    """A symbol's flow records start, and /live lists it, once its streams have been followed
    for the longest window (30 s of exchange time); decay ticks follow the exchange clock."""
    out: list[tuple[str, str | None, bytes]] = []
    mono = [0]
    norm = Normalizer(
        binance,
        lambda k, s, v: out.append((k, s, v)),
        clock=lambda: 99,
        monotonic=lambda: mono[0],
        flow_min_gap_ns=0,  # every record (pacing: the test below)
    )
    start = int(DIFF["E"])  # type: ignore[call-overload]  # the first event: coverage starts
    snap = b'{"lastUpdateId":10,"bids":[["100.0","1.0"]],"asks":[["101.0","1.0"]]}'
    norm.add_symbol("BTCUSDT")
    norm.on_snapshot_body(snap, "BTCUSDT", 1)
    norm.on_frame(frame(with_(U=11, u=11, b=[["100.0", "1.5"]], a=[])), 2)
    norm.on_frame(trade(1, start + 100), 3)
    assert [k for k, _, _ in out if k == FLOW] == []  # windows not covered yet: held back
    assert norm.live_symbols() == []  # book live, trade flow not yet
    mono[0] = 29_000 * 1_000_000  # exchange clock: start + 29 s
    norm.flow_ticks()
    assert norm.live_symbols() == []
    norm.on_frame(trade(2, start + 30_000, "1.5", maker=True), 4)
    flows = [TradeFlowRecord.model_validate_json(v) for k, _, v in out if k == FLOW]
    assert len(flows) == 1
    assert not flows[0].tick
    assert flows[0].as_of_ms == start + 30_000
    assert (flows[0].buy_volume_30s, flows[0].sell_volume_30s) == (0.5, 1.5)
    assert (flows[0].buy_volume_1s, flows[0].sell_volume_1s) == (0.0, 1.5)
    assert flows[0].sequence == 2 * 1024
    assert flows[0].recv_time_ns == 4
    assert norm.live_symbols() == ["BTCUSDT"]
    # 2 s on (the clock runs from the newest event, trade 2's E): on the 100 ms grid, the first
    # trade leaves the 30 s window, then the second the 1 s window.
    mono[0] += 2_000 * 1_000_000
    assert norm.flow_ticks() == 2
    ticks = [TradeFlowRecord.model_validate_json(v) for k, _, v in out if k == FLOW][1:]
    grid = [-(-t // 100) * 100 for t in (start + 30_100, start + 31_000)]
    assert [t.as_of_ms for t in ticks] == grid == [t.event_time_ms for t in ticks]
    assert all(t.tick for t in ticks)
    assert [t.sequence for t in ticks] == [2049, 2050]
    assert (ticks[0].buy_volume_30s, ticks[0].sell_volume_1s) == (0.0, 1.5)
    assert (ticks[1].sell_volume_1s, ticks[1].sell_volume_5s) == (0.0, 1.5)
    # Next: the second trade leaves the 5 s window.
    next_due = -(-(start + 35_000) // 100) * 100
    assert norm.next_flow_tick_s() == (next_due - (start + 32_001)) / 1000
    # A lost connection starts the windows over: not live until covered again.
    norm.reset("BTCUSDT", "disconnect", 5)
    assert norm.live_symbols() == []


def test_a_burst_of_trades_is_paced_to_one_record_per_gap_and_the_newest_is_released() -> None:
    """Within `flow_min_gap_ns` of a symbol's last record, trade-flow records replace each
    other; the newest goes out when the gap ends, and nothing older follows it."""
    out: list[tuple[str, str | None, bytes]] = []
    mono = [0]
    gap = 10_000_000
    norm = Normalizer(
        binance,
        lambda k, s, v: out.append((k, s, v)),
        clock=lambda: 99,
        monotonic=lambda: mono[0],
        flow_min_gap_ns=gap,
    )
    start = int(DIFF["E"])  # type: ignore[call-overload]
    norm.add_symbol("BTCUSDT")
    norm.on_frame(frame(with_(U=11, u=11, b=[], a=[])), 1)  # the first event: coverage starts
    mono[0] = 30_000 * 1_000_000
    norm.on_frame(trade(1, start + 30_000), 2)  # warm: goes out at once

    def flows() -> list[TradeFlowRecord]:
        return [TradeFlowRecord.model_validate_json(v) for k, _, v in out if k == FLOW]

    assert [f.last_trade_id for f in flows()] == [1]
    for i in range(2, 40):  # a burst inside the gap: held, each replacing the last
        mono[0] += 100_000
        norm.on_frame(trade(i, start + 30_000, "0.25"), 3 + i)
    assert [f.last_trade_id for f in flows()] == [1]
    assert norm.next_flow_tick_s() == pytest.approx((30_000 * 1_000_000 + gap - mono[0]) / 1e9)
    mono[0] = 30_000 * 1_000_000 + gap
    norm.flow_ticks()
    released = flows()[-1]
    assert [f.last_trade_id for f in flows()] == [1, 39]
    assert released.buy_volume_1s == pytest.approx(0.5 + 38 * 0.25)  # exact as of trade 39
    assert released.recv_time_ns == 3 + 39  # the newest trade's receive time
    norm.flow_ticks()  # nothing more is held
    assert len(flows()) == 2
    # After a quiet gap the next trade goes out at once again.
    mono[0] += 2 * gap
    norm.on_frame(trade(40, start + 30_050), 50)
    assert [f.last_trade_id for f in flows()] == [1, 39, 40]
