"""The History RPC on a real lake, served by a real `quantcore serve` with TLS and bearer tokens.

The lake is written by Spark itself: a small stream job runs the stream job's own expressions
(quantcore.stream.signals, quantcore.stream.lakerows) over a slice of the repository's
recordings, as Kafka rows read from files, into the job's own file sink
(quantcore.stream.lakesink), three micro-batches, so the Parquet files and the `_spark_metadata`
log are Spark's. The server reads it through the log's committed files.

History must return exactly the lake's rows (read directly with DuckDB over the committed
files: same sequences, same values, same order) across several pages and several calls (the
row limit per call truncates with a continuation token); refuse bad tokens (UNAUTHENTICATED),
tokens without the symbol or the method (PERMISSION_DENIED), malformed requests
(INVALID_ARGUMENT) and keep serving; answer FAILED_PRECONDITION without a lake; count it all
in its metrics; and `quantcore history --target` must print what the local read prints."""

from __future__ import annotations

import asyncio
import datetime
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import grpc
import pytest

from quantcore import lake, lakequery, lakestore
from quantcore.client.history import HistoryPages, HistoryQuery, history_rows
from quantcore.client.security import ClientCredentials
from quantcore.devservices import certs, kafkalike
from quantcore.devservices.ports import free_port
from quantcore.devservices.programs import ServeProcess
from quantcore.devservices.redis import RedisServer
from quantcore.events import BookRecord, TradeRecord
from quantcore.feed.recording import records_from_recording
from quantcore.historyrows import decode_columns
from quantcore.localmode.source import default_recordings_dir
from quantcore.redisacl import SERVE
from quantcore.v1 import marketdata_pb2, marketdata_pb2_grpc

pytestmark = pytest.mark.integration

RECORDINGS = sorted(default_recordings_dir().glob("*.gz"))
MAX_ROWS = 1000  # the server's row limit per call
PAGE_ROWS = 300  # and its page maximum
ALICE = "alice-token-0123456789abcdef"  # everything
CAROL = "carol-token-0123456789abcdef"  # BTCUSDT, but not History
DAVE = "dave-token-0123456789abcdef00"  # History of ETHUSDT only
TOKENS = f"""alice {ALICE}
carol {CAROL} symbols=BTCUSDT methods=Subscribe,GetSnapshot,ListSymbols
dave {DAVE} symbols=ETHUSDT methods=History
"""
SYMBOL = "BTCUSDT"


def _write_lake(root: Path, inputs: Path, checkpoints: Path, spark_jars: list[str]) -> None:
    """The job's lake tables for every record of the recordings, written by Spark's file sink
    in three micro-batches."""
    from quantcore.stream import lakerows, signals
    from quantcore.stream.lakesink import lake_writer
    from quantcore.stream.session import build_session

    records = records_from_recording(*RECORDINGS)
    inputs.mkdir()
    for part in range(3):  # one file per micro-batch (maxFilesPerTrigger 1)
        offsets = range(part * len(records) // 3, (part + 1) * len(records) // 3)
        kafkalike.write(inputs / f"part-{part}.json", ((o, records[o]) for o in offsets))
    spark = build_session("test-history-lake", spark_jars)
    source = (
        spark.readStream.schema(kafkalike.schema())
        .option("maxFilesPerTrigger", 1)
        .json(str(inputs))
    )
    books = signals.parse(source.where("topic = 'book'"), BookRecord)
    trades = signals.parse(source.where("topic = 'trades'"), TradeRecord)
    plan = {
        "signals": lakerows.published(signals.book_signals(books, 20)),
        "books": lakerows.records(books, signals.book_valid()),
        "trades": lakerows.records(trades, signals.trade_valid()),
    }
    queries = [
        lake_writer(rows, str(root / "sink"), table, str(checkpoints / table))
        .trigger(availableNow=True)
        .start()
        for table, rows in plan.items()
    ]
    for query in queries:
        query.awaitTermination(600)
        assert query.exception() is None, query.exception()


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory: pytest.TempPathFactory, spark_jars: list[str]) -> Path:
    assert RECORDINGS, "the recordings are missing (recordings/binance-spot)"
    tmp = tmp_path_factory.mktemp("history-lake")
    root = tmp / "lake"
    _write_lake(root, tmp / "inputs", tmp / "checkpoints", spark_jars)
    for table in ("signals", "books", "trades"):
        log = root / "sink" / table / lake.METADATA_DIR
        assert len([p for p in log.iterdir() if lake.is_log_file(p.name)]) >= 3, table
    return root


def lake_rows(root: Path, kind: str, symbol: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The lake's rows of `symbol`, read directly over the committed files, in exchange order."""
    files = [str(p) for p in lakestore.committed_files(root, kind)]
    sources = ", ".join(lakequery.literal(f) for f in files)
    order = f"{lake.TIME_COLUMN}, {lake.SEQUENCE_COLUMN[kind]}"
    result = duckdb.sql(
        f"SELECT * FROM read_parquet([{sources}], hive_partitioning = true, union_by_name = true)"
        f" WHERE symbol = '{symbol}' ORDER BY {order}"
    )
    return [d[0] for d in result.description], result.fetchall()


def served(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A lake row as History carries it: the `date` partition as its text."""
    return tuple(v.isoformat() if isinstance(v, datetime.date) else v for v in row)


def day_span(root: Path, kind: str) -> lake.Interval:
    _, rows = lake_rows(root, kind, SYMBOL)
    assert rows
    return lake.interval("2024-08-08", "2024-08-09")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("history-pki")
    ca = certs.new_ca("history test CA")
    server = certs.issue(ca, "serve", names=("localhost", "127.0.0.1"), server=True)
    certs.write_pair(directory / "tls", server, "tls.crt", "tls.key")
    certs.write_public(directory / "ca.crt", ca.cert_pem)
    (directory / "tokens").write_text(TOKENS)
    (directory / "alice.token").write_text(ALICE)
    return directory


@pytest.fixture(scope="module")
def server(
    lake_root: Path, pki: Path, redis_service: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, int]]:
    """`quantcore serve --lake` with TLS and tokens; (target, metrics port)."""
    metrics_port = free_port()
    logs = tmp_path_factory.mktemp("history-serve")
    with ServeProcess(
        redis_service.address,
        free_port(),
        logs / "serve.log",
        "--lake", str(lake_root),
        "--tls-dir", str(pki / "tls"),
        "--tokens", str(pki / "tokens"),
        "--history-max-rows", str(MAX_ROWS),
        "--history-page-rows", str(PAGE_ROWS),
        "--metrics-port", str(metrics_port),
        redis_auth=redis_service.auth(SERVE),
    ) as serve:  # fmt: skip
        serve.wait_started(60)
        yield serve.target, metrics_port


def creds(pki: Path, token: str | None = ALICE) -> ClientCredentials:
    return ClientCredentials(ca=pki / "ca.crt", token=token)


async def call_pages(
    target: str, credentials: ClientCredentials, request: marketdata_pb2.HistoryRequest
) -> list[marketdata_pb2.HistoryPage]:
    async with credentials.channel(target) as channel:
        call = marketdata_pb2_grpc.MarketDataStub(channel).History(
            request, metadata=credentials.metadata(), timeout=60
        )
        return [page async for page in call]


def status_of(target: str, credentials: ClientCredentials, **request: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        asyncio.run(call_pages(target, credentials, marketdata_pb2.HistoryRequest(**request)))
    return info.value.code()


def metric(port: int, name: str, labels: str = "") -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


# --- the rows ------------------------------------------------------------------------------


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("kind", ["signals", "books", "trades"])
def test_history_returns_exactly_the_lakes_rows_across_pages_and_calls(
    server, pki, lake_root, kind
):
    target, _ = server
    names, expected = lake_rows(lake_root, kind, SYMBOL)
    assert len(expected) > 2 * MAX_ROWS, len(expected)
    span = day_span(lake_root, kind)
    pager = HistoryPages(target, HistoryQuery(SYMBOL, span.start_ms, span.end_ms, kind), creds(pki))
    got_names: list[str] = []
    got: list[tuple[Any, ...]] = []
    started = time.perf_counter()

    async def read() -> None:
        async for page in pager.pages():
            page_names, rows = decode_columns(page)
            assert page.row_count <= PAGE_ROWS
            got_names.extend([] if got_names else page_names)
            got.extend(rows)

    asyncio.run(read())
    elapsed = time.perf_counter() - started
    print(f"\nHistory {kind}: {len(got)} rows in {pager.stats.pages} pages,"
          f" {pager.stats.calls} calls, {elapsed:.2f} s: {len(got) / elapsed:.0f} rows/s")  # fmt: skip
    assert got_names == names
    # Same rows, same values, same order (the lake's rows have no ties within one sink).
    assert got == [served(row) for row in expected]
    assert pager.stats.calls == len(expected) // MAX_ROWS + 1
    assert pager.stats.pages > pager.stats.calls
    # Same sequences as the records the job read.
    sequence = lake.SEQUENCE_COLUMN[kind]
    column = names.index(sequence)
    model = TradeRecord if kind == "trades" else BookRecord
    inputs = [r for r in records_from_recording(*RECORDINGS) if isinstance(r, model)]
    source_key = "trade_id" if kind == "trades" else "seq"
    assert {row[column] for row in got} == {
        getattr(r, source_key) for r in inputs if r.symbol == SYMBOL
    }


def test_fields_pick_and_order_the_columns(server, pki, lake_root):
    target, _ = server
    _, expected = lake_rows(lake_root, "signals", SYMBOL)
    names = list(lake_rows(lake_root, "signals", SYMBOL)[0])
    span = day_span(lake_root, "signals")
    query = HistoryQuery(SYMBOL, span.start_ms, span.end_ms, "signals", ("mid", "sequence"))
    got_names, got = asyncio.run(history_rows(target, query, creds(pki)))
    assert got_names == ["mid", "sequence"]
    mid, seq = names.index("mid"), names.index("sequence")
    assert got == [(row[mid], row[seq]) for row in expected]


def test_the_row_limit_truncates_a_call_with_a_token_that_goes_on(server, pki, lake_root):
    target, port = server
    span = day_span(lake_root, "signals")
    base: dict[str, Any] = {
        "symbol": SYMBOL,
        "kind": "signals",
        "from_ms": span.start_ms,
        "to_ms": span.end_ms,
    }
    truncated_before = metric(port, "quantcore_serve_history_calls_total", 'outcome="truncated"')
    # Asking for everything: the server's limit, in pages of its maximum.
    pages = asyncio.run(call_pages(target, creds(pki), marketdata_pb2.HistoryRequest(**base)))
    assert [p.row_count for p in pages] == [300, 300, 300, 100]
    assert all(p.next_page_token for p in pages)
    # Asking for less: that much, in the pages asked.
    small = marketdata_pb2.HistoryRequest(**base, page_size=20, max_rows=50)
    pages = asyncio.run(call_pages(target, creds(pki), small))
    assert [p.row_count for p in pages] == [20, 20, 10]
    # The token goes on right after the last row, and any page's token resumes after it.
    _, expected = lake_rows(lake_root, "signals", SYMBOL)
    follow = marketdata_pb2.HistoryRequest(
        **base, page_size=20, max_rows=30, page_token=pages[-1].next_page_token
    )
    after = [
        row
        for page in asyncio.run(call_pages(target, creds(pki), follow))
        for row in decode_columns(page)[1]
    ]
    assert after == [served(row) for row in expected[50:80]]
    resumed = marketdata_pb2.HistoryRequest(
        **base, page_size=20, max_rows=5, page_token=pages[0].next_page_token
    )
    again = decode_columns(asyncio.run(call_pages(target, creds(pki), resumed))[0])[1]
    assert again == [served(row) for row in expected[20:25]]
    assert (
        metric(port, "quantcore_serve_history_calls_total", 'outcome="truncated"')
        >= truncated_before + 3
    )


# --- refusals ------------------------------------------------------------------------------


def test_tokens_and_permissions_apply_to_history(server, pki, lake_root):
    target, port = server
    span = day_span(lake_root, "signals")
    ask: dict[str, Any] = {"kind": "signals", "from_ms": span.start_ms, "to_ms": span.end_ms}
    denied_before = metric(port, "quantcore_serve_refused_calls_total", 'reason="method_denied"')
    bad_before = metric(port, "quantcore_serve_refused_calls_total", 'reason="bad_token"')
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert status_of(target, creds(pki, None), symbol=SYMBOL, **ask) == unauthenticated
    assert status_of(target, creds(pki, "x" * 24), symbol=SYMBOL, **ask) == unauthenticated
    # Carol may read BTCUSDT, but not call History.
    assert status_of(target, creds(pki, CAROL), symbol=SYMBOL, **ask) == denied
    # ... whatever the request: she learns nothing of what History would say of it.
    assert status_of(target, creds(pki, CAROL), symbol=SYMBOL, **{**ask, "kind": "x"}) == denied
    # Dave may call History, of ETHUSDT only.
    assert status_of(target, creds(pki, DAVE), symbol=SYMBOL, **ask) == denied
    request = marketdata_pb2.HistoryRequest(symbol="ETHUSDT", max_rows=10, **ask)
    pages = asyncio.run(call_pages(target, creds(pki, DAVE), request))
    assert sum(p.row_count for p in pages) == 10
    assert metric(port, "quantcore_serve_refused_calls_total", 'reason="method_denied"') == (
        denied_before + 2
    )
    assert metric(port, "quantcore_serve_refused_calls_total", 'reason="bad_token"') == (
        bad_before + 1
    )


def test_malformed_requests_are_invalid_argument_and_the_server_keeps_serving(
    server, pki, lake_root
):
    target, port = server
    span = day_span(lake_root, "signals")
    ok: dict[str, Any] = {
        "symbol": SYMBOL,
        "kind": "signals",
        "from_ms": span.start_ms,
        "to_ms": span.end_ms,
    }
    invalid_before = metric(port, "quantcore_serve_history_calls_total", 'outcome="invalid"')
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert status_of(target, creds(pki), **{**ok, "kind": "quotes"}) == invalid
    assert status_of(target, creds(pki), **{**ok, "from_ms": span.end_ms}) == invalid
    assert status_of(target, creds(pki), **{**ok, "fields": ["mid", "nope"]}) == invalid
    assert status_of(target, creds(pki), **{**ok, "page_token": "garbage"}) == invalid
    assert (
        metric(port, "quantcore_serve_history_calls_total", 'outcome="invalid"')
        == invalid_before + 4
    )
    request = marketdata_pb2.HistoryRequest(**ok, max_rows=5)
    assert sum(p.row_count for p in asyncio.run(call_pages(target, creds(pki), request))) == 5


def test_without_a_lake_history_is_failed_precondition(
    pki, redis_service: RedisServer, tmp_path: Path
):
    with ServeProcess(
        redis_service.address,
        free_port(),
        tmp_path / "serve.log",
        "--tls-dir", str(pki / "tls"),
        "--tokens", str(pki / "tokens"),
        redis_auth=redis_service.auth(SERVE),
    ) as serve:  # fmt: skip
        serve.wait_started(60)
        request = marketdata_pb2.HistoryRequest(symbol=SYMBOL, from_ms=0, to_ms=1)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            asyncio.run(call_pages(serve.target, creds(pki), request))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "--lake" in (info.value.details() or "")


# --- the command ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        ["--format", "csv"],
        ["--kind", "books", "--fields", "seq,bid_px,ask_qty,prev_bid_px"],
        ["--kind", "trades", "--from", "2024-08-08T00:00", "--to", "2024-08-08T23:59"],
        [],
    ],
)
def test_history_target_prints_what_the_local_read_prints(server, pki, lake_root, options):
    target, _ = server
    bounds = [] if "--from" in options else ["--from", "2024-08-08", "--to", "2024-08-08"]
    base = [sys.executable, "-m", "quantcore.cli", "history", SYMBOL, *bounds, *options]
    local = subprocess.run(
        [*base, "--lake", str(lake_root)], capture_output=True, text=True, timeout=120, check=False
    )
    remote = subprocess.run(
        [*base, "--target", target, "--ca", str(pki / "ca.crt"),
         "--token-file", str(pki / "alice.token")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert local.returncode == 0, local.stderr
    assert remote.returncode == 0, remote.stderr
    assert len(local.stdout.splitlines()) > MAX_ROWS
    assert remote.stdout == local.stdout
