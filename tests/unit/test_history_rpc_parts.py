"""The pure parts of the History RPC: a request checked and bounded (quantcore.serve.historycall),
its page tokens, the rows' column encoding both ways (quantcore.historyrows), and the query text
(quantcore.lakequery); then paging through a small on-disk lake (quantcore.lakereader) with ties,
which must return every row once in the total order, whatever the page size."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantcore import historyrows, lake, lakequery, lakereader
from quantcore.serve.historycall import (
    HistoryLimits,
    HistoryRequestError,
    checked,
    page_token,
    read_token,
)
from quantcore.v1 import marketdata_pb2

ROOT = "/lake"
DEC_5 = 1_764_892_800_000  # 2025-12-05T00:00Z
LIMITS = HistoryLimits(max_rows_per_call=1000, max_page_rows=100)


def _request(**fields) -> marketdata_pb2.HistoryRequest:
    base = {"symbol": "BTCUSDT", "kind": "signals", "from_ms": DEC_5, "to_ms": DEC_5 + 1000}
    return marketdata_pb2.HistoryRequest(**{**base, **fields})


# --- the request ---------------------------------------------------------------------------


def test_a_plain_request_is_bounded_by_the_server_limits():
    call = checked(_request(kind=""), LIMITS, ROOT)
    assert (call.kind, call.symbol) == ("signals", "BTCUSDT")
    assert call.span == lake.Interval(DEC_5, DEC_5 + 1000)
    assert (call.page_size, call.max_rows, call.after) == (100, 1000, None)


def test_limits_above_the_server_are_lowered_to_them_and_smaller_ones_kept():
    assert checked(_request(page_size=10**6, max_rows=10**6), LIMITS, ROOT).max_rows == 1000
    call = checked(_request(page_size=7, max_rows=20), LIMITS, ROOT)
    assert (call.page_size, call.max_rows) == (7, 20)
    # A page never holds more than the call may return.
    assert checked(_request(page_size=50, max_rows=20), LIMITS, ROOT).page_size == 20


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "quotes"}, "unknown kind 'quotes'"),
        ({"to_ms": DEC_5}, "must be after from_ms"),
        ({"to_ms": DEC_5 - 1}, "must be after from_ms"),
        ({"from_ms": -5}, "before the epoch"),
        ({"symbol": "btc/usdt"}, "not an exchange symbol"),
        ({"symbol": ""}, "not an exchange symbol"),
        ({"fields": ["mid", "mid"]}, "distinct"),
        ({"page_token": "not-a-token"}, "not a token"),
    ],
)
def test_malformed_requests_are_refused_with_the_reason(fields, message):
    with pytest.raises(HistoryRequestError, match=message):
        checked(_request(**fields), LIMITS, ROOT)


def test_symbols_are_taken_in_upper_case():
    assert checked(_request(symbol=" ethusdt "), LIMITS, ROOT).symbol == "ETHUSDT"


# --- page tokens ---------------------------------------------------------------------------


def test_a_token_resumes_after_its_position_for_the_same_request_only():
    first = checked(_request(fields=["mid"]), LIMITS, ROOT)
    position = lakequery.Position(DEC_5 + 5, 42, f"{ROOT}/run-1/signals/part-0.parquet", 3)
    token = page_token(position, first.fingerprint, ROOT)
    body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert body["f"] == "run-1/signals/part-0.parquet"  # named relative to the lake
    again = checked(_request(fields=["mid"], page_token=token), LIMITS, ROOT)
    assert again.after == position
    others: list[dict[str, Any]] = [
        {"symbol": "ETHUSDT"},
        {"kind": "flow"},
        {"to_ms": DEC_5 + 999},
        {"fields": []},
    ]
    for other in others:
        with pytest.raises(HistoryRequestError, match="another request"):
            checked(_request(**{"fields": ["mid"], **other}, page_token=token), LIMITS, ROOT)


@given(
    st.integers(0, 2**62),
    st.integers(-(2**62), 2**62),
    st.text(min_size=1).filter(lambda f: not f.startswith("/")),
    st.integers(0, 2**40),
)
def test_tokens_round_trip(time_ms, sequence, file, row):
    position = lakequery.Position(time_ms, sequence, f"{ROOT}/{file}", row)
    assert read_token(page_token(position, "mark", ROOT), "mark", ROOT) == position


# --- the column encoding -------------------------------------------------------------------


def test_each_lake_type_has_its_wire_type():
    assert historyrows.wire_type("BIGINT") == historyrows.INT64
    assert historyrows.wire_type("INTEGER") == historyrows.INT64
    assert historyrows.wire_type("DOUBLE") == historyrows.DOUBLE
    assert historyrows.wire_type("BOOLEAN") == historyrows.BOOL
    assert historyrows.wire_type("DOUBLE[]") == historyrows.DOUBLE_LIST
    assert historyrows.wire_type("DATE") == historyrows.STRING
    assert historyrows.wire_type("VARCHAR") == historyrows.STRING


def test_rows_round_trip_through_a_page_with_nulls_and_exact_int64():
    names = ["sequence", "mid", "buyer_is_maker", "bid_px", "symbol", "prev_bid_px"]
    wires = [
        historyrows.wire_type(t)
        for t in ("BIGINT", "DOUBLE", "BOOLEAN", "DOUBLE[]", "VARCHAR", "DOUBLE")
    ]
    rows = [
        (2**62 + 1, 101.25, True, [101.0, 100.5], "BTCUSDT", None),
        (2**62 + 2, math.inf, False, [], "BTCUSDT", 100.75),
        (-3, 0.1, None, None, None, 1e-300),
    ]
    page = marketdata_pb2.HistoryPage(
        columns=historyrows.encode_columns(names, wires, rows), row_count=len(rows)
    )
    wire = marketdata_pb2.HistoryPage.FromString(page.SerializeToString())
    decoded_names, decoded = historyrows.decode_columns(wire)
    assert decoded_names == names
    # A null list comes back null; an empty one empty.
    assert decoded == rows


def test_an_empty_page_keeps_its_column_types():
    columns = historyrows.encode_columns(
        ["mid", "bid_px"], ["double_values", "double_list_values"], []
    )
    page = marketdata_pb2.HistoryPage(columns=columns, row_count=0)
    assert [c.WhichOneof("values") for c in page.columns] == [
        "double_values",
        "double_list_values",
    ]
    assert historyrows.decode_columns(page) == (["mid", "bid_px"], [])


def test_a_page_whose_columns_disagree_with_its_row_count_is_refused():
    columns = historyrows.encode_columns(["mid"], ["double_values"], [(1.0,)])
    with pytest.raises(ValueError, match="1 values for 2 rows"):
        historyrows.decode_columns(marketdata_pb2.HistoryPage(columns=columns, row_count=2))


# --- the query -----------------------------------------------------------------------------


def test_the_query_quotes_what_it_is_given():
    selection = lakequery.Selection("trades", "X'Y", lake.Interval(1, 2), ("price", 'a"b'))
    text = lakequery.select(["/l/it's.parquet"], selection)
    assert "'X''Y'" in text
    assert "'/l/it''s.parquet'" in text
    assert '"a""b"' in text
    assert text.endswith('ORDER BY "event_time_ms", "trade_id", "filename", "file_row_number"')


def test_an_unknown_kind_or_field_is_a_query_error():
    with pytest.raises(lakequery.QueryError, match="unknown kind"):
        lakequery.Selection("quotes", "X", lake.Interval(1, 2))
    with pytest.raises(lakequery.QueryError, match=r"unknown field.*nope"):
        lakequery.choose_columns(["mid", "sequence"], ["mid", "nope"])
    assert lakequery.choose_columns(["mid", "sequence"], []) == ("mid", "sequence")


# --- paging a lake on disk -----------------------------------------------------------------


def _lake_with_ties(root: Path) -> list[tuple[int, int, float]]:
    """Two sinks holding the same rows (a recording replayed twice), plus rows of another
    symbol and outside the interval; returns the rows of BTCUSDT in the interval."""
    rows = [(DEC_5 + t // 3, 100 + t // 2, float(t)) for t in range(40)]
    wanted = []
    for sink in ("run-1", "run-2"):
        table = root / sink / "signals"
        entries = []
        for symbol in ("BTCUSDT", "ETHUSDT"):
            part = table / f"date=2025-12-05/symbol={symbol}" / "part-0.parquet"
            part.parent.mkdir(parents=True)
            values = ", ".join(f"({s}, {t}, {m})" for t, s, m in [*rows, (DEC_5 + 10**6, 1, 0.0)])
            duckdb.sql(
                "COPY (SELECT sequence::BIGINT AS sequence, event_time_ms::BIGINT AS"
                " event_time_ms, mid::DOUBLE AS mid"
                f" FROM (VALUES {values}) v(sequence, event_time_ms, mid))"
                f" TO '{part}' (FORMAT parquet)"
            )
            entries.append({"path": f"file:{part}", "size": 1, "isDir": False, "action": "add"})
        (table / "_spark_metadata").mkdir()
        (table / "_spark_metadata" / "0").write_text(
            "\n".join(["v1", *(json.dumps(e) for e in entries)])
        )
        wanted += rows
    return sorted(wanted, key=lambda r: (r[0], r[1]))


@pytest.mark.parametrize("page_size", [1, 7, 80, 500])
def test_paging_returns_every_row_once_in_order_even_with_ties(tmp_path: Path, page_size: int):
    wanted = _lake_with_ties(tmp_path)
    span = lake.Interval(DEC_5, DEC_5 + 1000)
    plan = lakereader.plan(
        tmp_path, "signals", "BTCUSDT", span, ["event_time_ms", "sequence", "mid"]
    )
    assert plan.column_types == ("BIGINT", "BIGINT", "DOUBLE")
    got, after, pages = [], None, 0
    while True:
        page = lakereader.read_page(plan, after, page_size)
        got += page.rows
        pages += 1
        if not page.more:
            break
        assert len(page.rows) == page_size
        after = page.last
    assert [(t, s) for t, s, _ in got] == [(t, s) for t, s, _ in wanted]
    assert sorted(got) == sorted(wanted)
    assert pages == max(1, math.ceil(len(wanted) / page_size))


def test_a_symbol_without_files_is_nothing_stored(tmp_path: Path):
    _lake_with_ties(tmp_path)
    with pytest.raises(lakereader.NothingStored):
        lakereader.plan(tmp_path, "signals", "XRPUSDT", lake.Interval(DEC_5, DEC_5 + 1))
