"""The universe selector's ranking and hysteresis, as pure logic."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from quantcore.operator.api import Universe
from quantcore.operator.universe import Ticker, parse_tickers, rank, select

U = Universe(quote_asset="USDT", top=3, hysteresis=2, exclude=["USDCUSDT"])


def test_rank_filters_quote_asset_and_exclusions() -> None:
    tickers = [
        Ticker("BTCUSDT", 900.0),
        Ticker("ETHBTC", 5000.0),
        Ticker("USDCUSDT", 800.0),
        Ticker("ETHUSDT", 700.0),
        Ticker("DEADUSDT", 0.0),
        Ticker("SOLUSDT", 700.0),
    ]
    assert rank(tickers, U) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def test_jitter_inside_the_band_keeps_the_incumbent() -> None:
    ranked = ["A", "B", "D", "C", "E", "F"]  # C slipped from 3rd to 4th
    assert select(ranked, current=["A", "B", "C"], top=3, hysteresis=2) == ["A", "B", "C"]


def test_falling_out_of_the_band_replaces_the_incumbent() -> None:
    ranked = ["A", "B", "D", "E", "F", "C"]  # C is 6th: beyond top 3 + 2
    assert select(ranked, current=["A", "B", "C"], top=3, hysteresis=2) == ["A", "B", "D"]


def test_without_incumbents_it_is_the_plain_top_n() -> None:
    assert select(["A", "B", "C", "D"], current=[], top=2, hysteresis=5) == ["A", "B"]


@given(
    st.lists(st.sampled_from([f"S{i}" for i in range(30)]), unique=True),
    st.lists(st.sampled_from([f"S{i}" for i in range(30)]), unique=True),
    st.integers(1, 20),
    st.integers(0, 10),
)
def test_select_properties(ranked, current, top, hysteresis) -> None:
    chosen = select(ranked, current, top, hysteresis)
    assert len(chosen) == min(top, len(ranked))
    assert set(chosen) <= set(ranked)
    assert set(ranked[: max(0, top - len(set(current)))]) <= set(chosen) or len(chosen) == top
    # An incumbent inside the plain top N is never dropped.
    for s in set(current) & set(ranked[:top]):
        assert s in chosen
    # Stable: selecting again with the same ranking changes nothing.
    assert select(ranked, chosen, top, hysteresis) == chosen


def test_parse_skips_malformed_entries() -> None:
    text = json.dumps(
        [
            {"symbol": "BTCUSDT", "quoteVolume": "123.5", "lastPrice": "1"},
            {"symbol": "BROKEN"},
            {"symbol": "ETHUSDT", "quoteVolume": "7"},
        ]
    )
    assert parse_tickers(text) == [Ticker("BTCUSDT", 123.5), Ticker("ETHUSDT", 7.0)]
