"""Rows of the signal queries encode into SignalUpdate messages by field name, and records
of the signals topic decode into what the relay writes."""

from __future__ import annotations

import json
import math

import pytest

from quantcore.signalstore import Update, snapshot
from quantcore.stream.update import Malformed, encode, from_record
from quantcore.v1 import signals_pb2

BOOK_ROW = {
    "symbol": "BTCUSDT",
    "sequence": 50093239224,
    "event_time_ms": 1723161255408,
    "exchange_event_ns": 1723161255408 * 1_000_000,
    "feed_receive_ns": 11,
    "feed_publish_ns": 12,
    "kafka_append_ns": 13,
    "best_bid": 100.0,
    "best_ask": 100.5,
    "mid": 100.25,
    "obi_1": None,  # an undefined ratio
    "max_levels": 20,
    "ofi_l1": -2.5,
}


def test_book_row_round_trips_with_hops():
    update = signals_pb2.SignalUpdate.FromString(
        encode("book", BOOK_ROW, stream_compute_ns=21, sink_write_ns=22)
    )
    assert update.symbol == "BTCUSDT"
    assert update.sequence == 50093239224
    assert update.WhichOneof("body") == "book"
    assert update.book.mid == 100.25
    assert update.book.ofi_l1 == -2.5
    assert update.book.max_levels == 20
    assert math.isnan(update.book.obi_1)
    assert math.isnan(update.book.microprice)  # absent from the row: undefined, not 0
    hops = update.hops
    assert (hops.feed_receive_ns, hops.feed_publish_ns, hops.kafka_append_ns) == (11, 12, 13)
    assert (hops.stream_compute_ns, hops.sink_write_ns) == (21, 22)
    assert hops.exchange_event_ns == 1723161255408 * 1_000_000


def test_trades_row_fills_trade_flow():
    row = {
        "symbol": "ETHUSDT",
        "sequence": 7,
        "event_time_ms": 1,
        "tfi_1s": 0.5,
        "volume_30s": 3.0,
        "window_end_ms": 2000,
    }
    update = signals_pb2.SignalUpdate.FromString(
        encode("trades", row, stream_compute_ns=1, sink_write_ns=2)
    )
    assert update.WhichOneof("body") == "trades"
    assert update.trades.tfi_1s == 0.5
    assert update.trades.volume_30s == 3.0
    assert update.trades.window_end_ms == 2000


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown kind"):
        encode("quotes", BOOK_ROW, stream_compute_ns=0, sink_write_ns=0)


def test_snapshot_decodes_stored_kinds_only():
    fields = {b"book_seq": b"42", b"book": b"\x01\x02", b"trades_seq": b"7"}
    snap = snapshot(fields)
    assert set(snap) == {"book"}
    assert snap["book"].sequence == 42
    assert snap["book"].payload == b"\x01\x02"


def _record(**row: object) -> bytes:
    return json.dumps(row).encode()


def test_signals_record_becomes_an_update_for_its_kind():
    # As Spark's to_json writes it: nulls left out, the kind added.
    value = _record(kind="book", valid=True, topic="b", partition=0, offset=9, **{
        k: v for k, v in BOOK_ROW.items() if v is not None
    })  # fmt: skip
    update = from_record(value, stream_compute_ns=21, sink_write_ns=22)
    assert isinstance(update, Update)
    assert (update.symbol, update.kind, update.sequence) == ("BTCUSDT", "book", 50093239224)
    decoded = signals_pb2.SignalUpdate.FromString(update.payload)
    assert decoded.book.mid == 100.25
    assert math.isnan(decoded.book.obi_1)  # absent (null) stays undefined
    assert (decoded.hops.stream_compute_ns, decoded.hops.sink_write_ns) == (21, 22)


def test_refused_input_row_becomes_its_coordinates():
    value = _record(kind="trades", valid=False, topic="trades-x", partition=1, offset=77)
    assert from_record(value, stream_compute_ns=0, sink_write_ns=0) == Malformed("trades-x", 1, 77)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (_record(kind="book", valid=True, symbol="X"), "missing field 'sequence'"),
        (_record(kind="quotes", valid=True, symbol="X", sequence=1, event_time_ms=1), "unknown"),
        (_record(kind="book", valid=True, symbol="X", sequence="1"), "sequence an integer"),
        (_record(kind="book", valid=True, symbol="X", sequence=-1, event_time_ms=1), "negative"),
        (_record(kind="book", valid=True, symbol="X", sequence=1, mid="high"), "cannot encode"),
        (_record(valid=False, topic="t"), "missing field 'partition'"),
    ],
)
def test_records_the_job_does_not_write_are_refused_clearly(value, why):
    with pytest.raises(ValueError, match=why):
        from_record(value, stream_compute_ns=0, sink_write_ns=0)
