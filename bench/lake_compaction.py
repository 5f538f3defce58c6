"""A one-symbol, one-day read of the lake before and after compaction (quantcore.lakecompaction).

A sink as the stream job leaves it after a day at its default interval: a Parquet file per
symbol per 30 s batch (2880 a day), each committed at its batch's end, the log compacted as
Spark compacts it. The rows are synthetic book signals at `--rate` per second per symbol (the
schema's columns, DuckDB-made). Printed: the read of one symbol's day through the log and the
merge table (as `quantcore history` and the History RPC read it) on the small files; after the
running job's compaction at the day's end (its hours merged, the last hour's files not yet);
and after the compaction once the sink's clock is past the day (one file).

    python -m bench.lake_compaction [--symbols 2] [--rate 10] [--interval 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from quantcore import lake, lakecompaction, lakefiles, lakemerge, lakereader

DAY = "2024-08-08"
DAY_START_MS = 1_723_075_200_000
DAY_MS = 86_400_000
BOOK_COLUMNS = (
    "best_bid", "best_ask", "best_bid_qty", "best_ask_qty", "mid", "microprice", "spread",
    "spread_bps", "obi_1", "obi_5", "obi_10", "obi_20", "obi_weighted", "ofi_l1",
)  # fmt: skip


def write_sink(table_dir: Path, symbols: list[str], rate: float, interval_s: int) -> int:
    """The small-file sink: one file per symbol per batch; returns the number of files."""
    import duckdb

    per_batch = int(rate * interval_s)
    batches = DAY_MS // (interval_s * 1000)
    doubles = ", ".join(f"random() * 60000 AS {name}" for name in BOOK_COLUMNS)
    db = duckdb.connect()
    entries = []
    for symbol in symbols:
        directory = table_dir / lake.partition_path(DAY, symbol)
        directory.mkdir(parents=True)
        # The whole day once, then a file per batch's slice of it (as the sink cuts it).
        db.execute(
            f"""CREATE OR REPLACE TABLE day AS SELECT
                    i AS sequence,
                    {DAY_START_MS} + i * {int(1000 / rate)} AS event_time_ms,
                    'book' AS kind, 'book' AS topic, 0 AS partition, i AS offset,
                    {doubles},
                    i * 1000 AS feed_receive_ns, i * 1000 AS feed_publish_ns,
                    i * 1000 AS kafka_append_ns
                FROM range({per_batch * batches}) t(i)"""
        )
        for batch in range(batches):
            out = directory / f"part-{batch:05d}-{symbol}.c000.snappy.parquet"
            db.execute(
                f"""COPY (SELECT * FROM day WHERE sequence >= {batch * per_batch}
                          AND sequence < {(batch + 1) * per_batch})
                    TO '{out}' (FORMAT parquet, COMPRESSION snappy)"""
            )
            committed_ms = DAY_START_MS + (batch + 1) * interval_s * 1000
            entry = lake.add_entry(out.as_uri(), out.stat().st_size, committed_ms)
            entries.append((batch, entry))
    log_dir = table_dir / lake.METADATA_DIR
    log_dir.mkdir()
    # Spark compacts the log every 10 batches and deletes the older batch files: the last
    # compaction names everything up to it, the batches after it follow.
    last = batches - 1
    compact = last - (last + 1) % lake.LOG_COMPACT_INTERVAL
    (log_dir / f"{compact}.compact").write_text(
        lake.log_text(e for b, e in sorted(entries, key=lambda x: x[0]) if b <= compact)
    )
    for batch in range(compact + 1, batches):
        (log_dir / str(batch)).write_text(lake.log_text(e for b, e in entries if b == batch))
    return len(entries)


def timed_read(root: Path, symbol: str) -> tuple[int, int, float]:
    span = lake.interval(DAY, DAY)
    started = time.perf_counter()
    plan = lakereader.plan(root, "signals", symbol, span)
    page = lakereader.read_page(plan, None, 10**9)
    return len(page.rows), len(plan.files), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=2)
    parser.add_argument("--rate", type=float, default=10.0, help="rows per second per symbol")
    parser.add_argument("--interval", type=int, default=30, help="the sink's batch interval (s)")
    args = parser.parse_args()
    symbols = [f"S{i}USDT" for i in range(args.symbols)]
    with tempfile.TemporaryDirectory(prefix="lake-compaction-") as temp:
        root = Path(temp) / "lake"
        started = time.perf_counter()
        files = write_sink(root / "sink" / "signals", symbols, args.rate, args.interval)
        print(f"sink written: {files} files in {time.perf_counter() - started:.0f} s")
        rows, read_files, before_s = timed_read(root, symbols[0])
        print(
            f"read {symbols[0]} {DAY}, small files: {rows} rows from {read_files} files"
            f" in {before_s:.2f} s ({rows / before_s:,.0f} rows/s)"
        )
        table = lakefiles.LocalTable(root / "sink" / "signals")
        committed = lake.committed_times(table.log())
        for label, horizon in (
            ("running, at the day's end", lakemerge.horizon(committed)),
            ("the day closed", DAY_START_MS + DAY_MS + lakemerge.HOUR_MS),
        ):
            started = time.perf_counter()
            done = lakecompaction.compact_table(
                table, "signals", horizon=horizon, keep_sources_ms=0
            )
            compact_s = time.perf_counter() - started
            assert done is not None
            print(
                f"compaction, {label}: {done.files_before} files into {done.files_after} in"
                f" {compact_s:.1f} s; {done.bytes_before / 2**20:.1f} MiB ->"
                f" {done.bytes_after / 2**20:.1f} MiB"
            )
            rows_after, read_files, after_s = timed_read(root, symbols[0])
            assert rows_after == rows
            print(
                f"read {symbols[0]} {DAY}, {label}: {rows_after} rows from {read_files} file(s)"
                f" in {after_s:.2f} s ({rows_after / after_s:,.0f} rows/s):"
                f" {before_s / after_s:.1f}x the small files' speed"
            )


if __name__ == "__main__":
    main()
