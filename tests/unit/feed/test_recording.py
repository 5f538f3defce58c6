"""The shared Binance recordings through the shard's normalizer: the documented facts hold and
every published top-20 book equals an independent reconstruction written here with stdlib json."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from quantcore.events import BookRecord, TradeRecord
from quantcore.feed.recording import Published, publish_recording, records_from_recording
from tests.unit.feed.reference import BTC, ETH, reference_books


@pytest.fixture(scope="module")
def btc() -> Published:
    return publish_recording(BTC)


@pytest.fixture(scope="module")
def eth() -> Published:
    return publish_recording(ETH)


@pytest.mark.parametrize(
    ("name", "symbol", "applied"), [("btc", "BTCUSDT", 3449), ("eth", "ETHUSDT", 3432)]
)
def test_recording_syncs_with_the_documented_counts(
    request: pytest.FixtureRequest, name: str, symbol: str, applied: int
) -> None:
    published: Published = request.getfixturevalue(name)
    counters = published.counters[symbol]
    assert (counters.applied, counters.dropped, counters.gaps) == (applied, 2, 0)
    assert counters.crossed == 0
    assert counters.resyncs == 0
    assert published.quarantined == {}
    assert len(published.values("book")) == applied


@pytest.mark.parametrize(("name", "path"), [("btc", BTC), ("eth", ETH)])
def test_every_book_equals_an_independent_reconstruction(
    request: pytest.FixtureRequest, name: str, path: Path
) -> None:
    published: Published = request.getfixturevalue(name)
    reference = reference_books(path)
    books = [orjson.loads(v) for v in published.values("book")]
    assert [b["seq"] for b in books] == list(reference)
    prev = None
    for book in books:
        want_bids, want_asks = reference[book["seq"]]
        assert list(zip(book["bid_px"], book["bid_qty"], strict=False)) == want_bids
        assert list(zip(book["ask_px"], book["ask_qty"], strict=False)) == want_asks
        assert len(book["bid_px"]) == len(book["ask_px"]) == 20
        # Never crossed; strictly sorted best-first.
        assert book["bid_px"][0] < book["ask_px"][0]
        assert all(a > b for a, b in zip(book["bid_px"], book["bid_px"][1:], strict=False))
        assert all(a < b for a, b in zip(book["ask_px"], book["ask_px"][1:], strict=False))
        # The previous top of book travels with each record (None only on the first).
        if prev is None:
            assert book["prev_bid_px"] is None
        else:
            assert (book["prev_bid_px"], book["prev_bid_qty"]) == (
                prev["bid_px"][0],
                prev["bid_qty"][0],
            )
            assert (book["prev_ask_px"], book["prev_ask_qty"]) == (
                prev["ask_px"][0],
                prev["ask_qty"][0],
            )
            assert book["first_seq"] == prev["seq"] + 1
        prev = book


def test_raw_topic_is_the_recording_itself(btc: Published) -> None:
    raw = btc.values("raw")
    with gzip.open(BTC, "rb") as fh:
        lines = [line.rstrip(b"\n") for line in fh]
    assert raw == lines


def test_records_validate_against_the_event_models() -> None:
    records = records_from_recording(BTC, ETH, levels=5)
    books = [r for r in records if isinstance(r, BookRecord)]
    trades = [r for r in records if isinstance(r, TradeRecord)]
    assert len(books) == 3449 + 3432
    assert len(trades) == 9757 + 6106
    assert {b.symbol for b in books} == {"BTCUSDT", "ETHUSDT"}
    assert all(len(b.bid_px) == 5 and b.tick_size == 0.01 for b in books)
    # Merged by receive time, so the publish (= receive) times never go backwards.
    times = [r.publish_time_ns for r in records]
    assert times == sorted(times)
    # BTCUSDT's spread is one tick almost all the time.
    btc_books = [b for b in books if b.symbol == "BTCUSDT"]
    one_tick = sum(round((b.ask_px[0] - b.bid_px[0]) / b.tick_size) == 1 for b in btc_books)
    assert one_tick / len(btc_books) > 0.9
    trade = trades[0]
    assert trade.trade_id == 3735683259
    assert trade.buyer_is_maker
