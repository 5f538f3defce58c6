"""The log of record, replayed: a first `quantcore up` archives the raw topic in its lake; a
second, `--source archive --from --to`, replays 15 s of that archive (an interval starting far
from any snapshot) through the whole pipeline again: replay server, a fresh feed shard, Kafka,
Spark, Redis. Its book signals are the first run's, value for value, for every update the
first run took in during the interval."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from quantcore import lakestore
from quantcore.v1 import signals_pb2
from tests.e2e.test_up import READY, Output, start_up
from tests.fixtures.cluster import eventually

pytestmark = pytest.mark.e2e

SYMBOLS = ("BTCUSDT", "ETHUSDT")
BOOK_FIELDS = [f.name for f in signals_pb2.BookSignals.DESCRIPTOR.fields]
# Level-1 order-flow imbalance compares with the shard's previous top of book: a fresh shard's
# first update has none (the first run's shard had one), so that one field of that one row
# differs by design.
NEEDS_PREVIOUS_BOOK = "ofi_l1"
NS = 1_000_000_000
INTERVAL_START_S = 20  # after the first archived line: well past the recording's one snapshot
INTERVAL_S = 15


def _rows(root: Path, table: str, columns: str, grouped: bool = False) -> list[dict[str, Any]]:
    """`columns` of the committed rows of `table` in the lake (through the sinks' logs), per
    symbol when `grouped`."""
    files = lakestore.committed_files(root, table)
    if not files:
        return []
    listed = ", ".join(f"'{f}'" for f in files)
    result = duckdb.sql(
        f"SELECT {columns} FROM read_parquet([{listed}], hive_partitioning = true)"
        + (" GROUP BY symbol" if grouped else "")
    )
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def _stop(proc: subprocess.Popen[str], out: Output) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(120)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        pytest.fail(f"quantcore up did not stop within 120 s:\n{out.text()}")
    assert code == 0, out.text()


def _same(a: Any, b: Any) -> bool:
    """Bit for bit, with NaN (an empty side of the book) equal to NaN."""
    return a == b or (a != a and b != b)


def _signals(root: Path) -> dict[tuple[str, int], dict[str, Any]]:
    columns = ", ".join(["symbol", "sequence", "feed_receive_ns", "event_time_ms", *BOOK_FIELDS])
    rows = _rows(root, "signals", columns)
    keyed = {(r["symbol"], r["sequence"]): r for r in rows}
    assert len(keyed) == len(rows), "a signal row twice in one run's lake"
    return keyed


@pytest.mark.timeout(1800)
def test_an_archived_interval_replays_through_the_pipeline_to_the_same_signals(
    tmp_path: Path,
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    common = ("--symbols", *SYMBOLS, "--lake-interval", "2")
    proc, out = start_up("--dir", str(first), *common)
    try:
        out.wait_for(READY, proc, timeout=900)
        raw = first / "lake"

        def interval() -> tuple[int, int] | None:
            """[start, end) once both symbols' raw lines reach past it and every book signal
            of it is committed (a symbol's rows commit in its partition's order)."""
            spans = _rows(raw, "raw", "symbol, min(recv_ns) AS lo, max(recv_ns) AS hi", True)
            if {r["symbol"] for r in spans} != set(SYMBOLS):
                return None
            start = min(r["lo"] for r in spans) + INTERVAL_START_S * NS
            end = start + INTERVAL_S * NS
            signals = _rows(raw, "signals", "symbol, max(feed_receive_ns) AS at", True)
            reached = [r["hi"] for r in spans] + [r["at"] for r in signals]
            if len(signals) < len(SYMBOLS) or min(reached) < end:
                return None
            return start, end

        found = eventually(interval, "the interval archived and signalled", 600)
        assert found is not None
        start_ns, end_ns = found
    finally:
        _stop(proc, out)
    before = _signals(first / "lake")
    wanted = {k: r for k, r in before.items() if start_ns <= r["feed_receive_ns"] < end_ns}
    assert {s for s, _ in wanted} == set(SYMBOLS)

    proc, out = start_up(
        "--dir", str(second), *common, "--source", "archive", "--archive", str(first / "lake"),
        "--from", _iso(start_ns), "--to", _iso(end_ns),
    )  # fmt: skip
    try:
        out.wait_for(READY, proc, timeout=900)
        assert "source: ARCHIVE" in out.text()

        def replayed() -> dict[tuple[str, int], dict[str, Any]] | None:
            got = _signals(second / "lake")
            return got if set(wanted) <= set(got) else None

        replayed_rows = eventually(replayed, "every update of the interval signalled again", 600)
        assert replayed_rows is not None
        again = replayed_rows
    finally:
        _stop(proc, out)
    # Nothing but the interval's updates (and the book the shard synced on, just before it).
    first_seen = {s: min(seq for sym, seq in again if sym == s) for s in SYMBOLS}
    assert set(again) <= set(before)
    assert all(seq <= min(q for sym, q in wanted if sym == s) for s, seq in first_seen.items())
    mismatches = []
    for key, row in again.items():
        original = before[key]
        for name in BOOK_FIELDS:
            if name == NEEDS_PREVIOUS_BOOK and key[1] == first_seen[key[0]]:
                continue
            if not _same(row[name], original[name]):
                mismatches.append((key, name, row[name], original[name]))
        if key in wanted and row["event_time_ms"] != original["event_time_ms"]:
            mismatches.append(
                (key, "event_time_ms", row["event_time_ms"], original["event_time_ms"])
            )
    assert not mismatches, mismatches[:10]
