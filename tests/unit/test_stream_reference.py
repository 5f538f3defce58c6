"""The plain-Python reference the stream tests compare against, checked on hand-worked books."""

from __future__ import annotations

import math

import pytest

from quantcore.events import BookRecord, TradeFlowRecord
from tests.unit import stream_reference as ref


def _book(prev: tuple[float, float, float, float] | None = None, **kw) -> BookRecord:
    fields = {
        "symbol": "X",
        "seq": 1,
        "first_seq": 1,
        "event_time_ms": 0,
        "recv_time_ns": 0,
        "publish_time_ns": 0,
        "tick_size": 0.5,
        "bid_px": [100.0, 99.5],
        "bid_qty": [3.0, 1.0],
        "ask_px": [101.0, 101.5],
        "ask_qty": [1.0, 4.0],
        "prev_bid_px": prev[0] if prev else None,
        "prev_bid_qty": prev[1] if prev else None,
        "prev_ask_px": prev[2] if prev else None,
        "prev_ask_qty": prev[3] if prev else None,
    }
    fields.update(kw)
    return BookRecord(**fields)


def test_prices_spread_and_imbalance():
    s = ref.book(_book())
    assert s["mid"] == 100.5
    assert s["microprice"] == pytest.approx((100.0 * 1.0 + 101.0 * 3.0) / 4.0)
    assert s["spread_ticks"] == 2.0
    assert s["spread_bps"] == pytest.approx(1.0 / 100.5 * 1e4)
    assert s["obi_1"] == pytest.approx(0.5)  # (3 - 1) / 4
    assert s["obi_5"] == pytest.approx((4.0 - 5.0) / 9.0)  # a 2-level book uses both levels
    assert s["obi_max"] == s["obi_20"]


def test_weighted_imbalance_discounts_by_distance_in_bps():
    s = ref.book(_book())
    d = lambda p: 1.0 / (1.0 + abs(p - 100.5) / 100.5 * 1e4)  # noqa: E731
    b = 3.0 * d(100.0) + 1.0 * d(99.5)
    a = 1.0 * d(101.0) + 4.0 * d(101.5)
    assert s["obi_weighted"] == pytest.approx((b - a) / (b + a))


@pytest.mark.parametrize(
    ("prev", "expected"),
    [
        (None, 0.0),  # first record after a sync: no flow
        ((100.0, 2.0, 101.0, 1.0), (3.0 - 2.0) - (1.0 - 1.0)),  # same prices: size changes
        ((99.5, 2.0, 101.0, 1.0), 3.0 - 0.0),  # bid stepped up: all new bid size is flow
        ((100.5, 2.0, 101.5, 6.0), -2.0 - 1.0),  # bid fell (old size left), ask fell (new size)
    ],
)
def test_level1_ofi(prev, expected):
    assert ref.book(_book(prev))["ofi_l1"] == pytest.approx(expected)


def test_empty_side_volume_gives_nan_imbalance():
    s = ref.book(_book(bid_qty=[0.0, 0.0], ask_qty=[0.0, 0.0]))
    assert math.isnan(s["obi_1"])


def _flow(as_of: int, buy: tuple[float, float, float], sell: tuple[float, float, float]):
    return TradeFlowRecord(
        symbol="X",
        sequence=1024,
        as_of_ms=as_of,
        buy_volume_1s=buy[0],
        sell_volume_1s=sell[0],
        buy_volume_5s=buy[1],
        sell_volume_5s=sell[1],
        buy_volume_30s=buy[2],
        sell_volume_30s=sell[2],
        last_trade_id=1,
        event_time_ms=as_of,
        recv_time_ns=0,
        publish_time_ns=0,
        tick=False,
    )


def test_trade_flow_windows():
    flow = ref.trade_flow(_flow(10_000, (3.0, 3.0, 5.0), (0.0, 1.0, 1.0)))
    assert flow["window_end_ms"] == 10_000
    assert flow["volume_1s"] == 3.0
    assert flow["tfi_1s"] == 1.0
    assert flow["volume_5s"] == 4.0
    assert flow["tfi_5s"] == pytest.approx(0.5)
    assert flow["volume_30s"] == 6.0
    assert flow["tfi_30s"] == pytest.approx(4.0 / 6.0)
    empty = ref.trade_flow(_flow(10_000, (0.0, 0.0, 0.0), (0.0, 0.0, 1.0)))
    assert math.isnan(empty["tfi_1s"])
    assert empty["volume_1s"] == 0.0
    assert empty["tfi_30s"] == -1.0
