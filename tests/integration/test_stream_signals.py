"""The signal expressions on real Spark over every book and trade-flow record of the repository's
recordings equal the plain-Python reference (absolute tolerance 1e-9); malformed records are
flagged, not fatal."""

from __future__ import annotations

import json

import pytest

from quantcore.events import BookRecord, TradeFlowRecord
from quantcore.feed.recording import flow_from_recording, records_from_recording
from quantcore.localmode.source import default_recordings_dir
from quantcore.stream import signals
from quantcore.stream.session import build_session
from quantcore.v1 import signals_pb2
from tests.unit import stream_reference as ref

pytestmark = pytest.mark.integration

RECORDINGS = sorted(default_recordings_dir().glob("*.gz"))
BOOK_FIELDS = [f.name for f in signals_pb2.BookSignals.DESCRIPTOR.fields]
FLOW_FIELDS = [f.name for f in signals_pb2.TradeFlow.DESCRIPTOR.fields]


@pytest.fixture(scope="module")
def books() -> list[BookRecord]:
    assert RECORDINGS, "the recordings are missing (recordings/binance-spot)"
    return [r for r in records_from_recording(*RECORDINGS) if isinstance(r, BookRecord)]


def _kafka_frame(spark, values: list[bytes]):
    from pyspark.sql import functions as F

    rows = [(v, "book", 0, i) for i, v in enumerate(values)]
    frame = spark.createDataFrame(rows, "value binary, topic string, partition int, offset long")
    return frame.withColumn("timestamp", F.timestamp_millis(F.lit(1_700_000_000_000)))


@pytest.mark.parametrize("max_levels", [20, 7])
def test_every_book_signal_equals_the_reference(spark_jars, books, max_levels):
    spark = build_session("stream-signals-test", spark_jars)
    frame = _kafka_frame(spark, [b.model_dump_json().encode() for b in books])
    out = signals.book_signals(signals.parse(frame, BookRecord), max_levels).collect()
    assert len(out) == len(books)
    by_seq = {(b.symbol, b.seq): b for b in books}
    mismatches = []
    for row in out:
        assert row["valid"]
        expected = ref.book(by_seq[(row["symbol"], row["sequence"])], max_levels)
        for name in BOOK_FIELDS:
            got = row[name]
            if not ref.close(float("nan") if got is None else float(got), float(expected[name])):
                mismatches.append((row["symbol"], row["sequence"], name, got, expected[name]))
    assert not mismatches, mismatches[:5]
    assert row["kafka_append_ns"] == 1_700_000_000_000 * 1_000_000


def test_malformed_records_are_flagged_not_fatal(spark_jars, books):
    spark = build_session("stream-signals-test", spark_jars)
    good = books[0].model_dump()
    bad = [
        b"{not json",
        b'{"symbol": "X"}',  # required fields missing
        BookRecord.model_construct(**{**good, "bid_qty": good["bid_qty"][:-1]})
        .model_dump_json()
        .encode(),
        BookRecord.model_construct(**{**good, "tick_size": 0.0}).model_dump_json().encode(),
        BookRecord.model_construct(**{**good, "ask_px": []}).model_dump_json().encode(),
        b'{"symbol": "X", "seq": "not a number"}',
        # A null quantity inside an otherwise well-formed side.
        json.dumps(
            {**good, "ask_qty": [*good["ask_qty"][:3], None, *good["ask_qty"][4:]]}
        ).encode(),
    ]
    # Deeper than max_levels is fine: the levels beyond it are not read.
    deep = {**good, "bid_px": [good["bid_px"][0] - 0.01 * k for k in range(signals.MAX_LEVELS + 5)]}
    deep["bid_qty"] = [1.0] * len(deep["bid_px"])
    values = [books[0].model_dump_json().encode(), json.dumps(deep).encode(), *bad]
    rows = signals.book_signals(
        signals.parse(_kafka_frame(spark, values), BookRecord), 20
    ).collect()
    assert [r["valid"] for r in sorted(rows, key=lambda r: r["offset"])] == [True, True] + [
        False
    ] * len(bad)


def test_every_trade_flow_row_equals_the_reference(spark_jars):
    flows = flow_from_recording(*RECORDINGS)
    assert any(f.tick for f in flows)
    assert any(not f.tick for f in flows)
    spark = build_session("stream-signals-test", spark_jars)
    values = [f.model_dump_json().encode() for f in flows]
    bad = [b"{not json", b'{"symbol": "X", "sequence": 1}', values[0].replace(b'"tick":', b'"x":')]
    rows = signals.trade_flow(
        signals.parse(_kafka_frame(spark, [*values, *bad]), TradeFlowRecord)
    ).collect()
    assert len(rows) == len(flows) + len(bad)
    by_seq = {(f.symbol, f.sequence): f for f in flows}
    mismatches = []
    for row in rows[: len(flows)]:
        assert row["valid"]
        record = by_seq[(row["symbol"], row["sequence"])]
        expected = ref.trade_flow(record)
        for name in FLOW_FIELDS:
            got = row[name]
            if not ref.close(float("nan") if got is None else float(got), float(expected[name])):
                mismatches.append((row["symbol"], row["sequence"], name, got, expected[name]))
        assert row["feed_receive_ns"] == record.recv_time_ns
        assert row["exchange_event_ns"] == record.event_time_ms * 1_000_000
    assert not mismatches, mismatches[:5]
    assert [row["valid"] for row in rows[len(flows) :]] == [False] * len(bad)
