"""The lake's bytes per symbol per day, for a replayed recording.

The repository's recordings (books, trades, trade-flow records and raw lines, as a shard
publishes them)
go through `quantcore stream --lake` on a local Kafka and Redis; once the lake holds every
row, the bench sums the Parquet files each table's sink logs commit, per symbol, and divides by
the exchange time the recording covers for that symbol. So the figures are measured bytes for
a measured interval, extrapolated linearly to 24 h: a day of a symbol as busy as the recording.

A replay goes through in a few lake batches, while a live day is a batch every
`--lake-interval` (30 s by default: 2880 files per table and symbol a day); the bench also
prints the smallest file it measured, the fixed cost (Parquet footer and schema) each of those
files adds until small files are compacted.

    python -m bench.lake_size [--lake DIR]   # --lake: measure an existing lake instead
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import duckdb
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from quantcore import history, kafkaacl, lake, lakestore
from quantcore.devservices.kafka import KafkaBroker
from quantcore.devservices.programs import child_env
from quantcore.devservices.redis import RedisServer
from quantcore.devservices.spark import spark_jars
from quantcore.events import BookRecord, Topics, TradeFlowRecord, TradeRecord
from quantcore.feed.recording import (
    RAW,
    flow_from_recording,
    publish_recording,
    records_from_recording,
)
from quantcore.localmode.source import default_recordings_dir
from quantcore.redisacl import RELAY

DAY_MS = 86_400_000


def replay_into_lake(work: Path, recordings: list[Path], timeout: float) -> Path:
    """Run the job over every record of `recordings`; returns the lake's root."""
    records = [*records_from_recording(*recordings), *flow_from_recording(*recordings)]
    raw = [(s, v) for k, s, v in publish_recording(*recordings).records if k == RAW and s]
    symbols = sorted({r.symbol for r in records})
    partition = {s: i % 2 for i, s in enumerate(symbols)}
    expected = {
        "signals": sum(isinstance(r, BookRecord) for r in records),
        "books": sum(isinstance(r, BookRecord) for r in records),
        "trades": sum(isinstance(r, TradeRecord) for r in records),
        "flow": sum(isinstance(r, TradeFlowRecord) for r in records),
        "raw": len(raw),
    }
    root = work / "lake"
    broker, redis = KafkaBroker(work / "kafka"), RedisServer(work / "redis")
    with broker, redis:
        feed = Topics.with_prefix(f"size{int(time.time())}")
        broker.grant(feed)
        admin = AdminClient(broker.client_config(kafkaacl.ADMIN))
        for future in admin.create_topics([NewTopic(t, 2, 1) for t in feed.all()]).values():
            future.result(30)
        producer = Producer(
            {
                **broker.client_config(kafkaacl.FEED),
                "linger.ms": 5,
                # Every record of the recordings queued at once (raw lines included).
                "queue.buffering.max.messages": 1_000_000,
            }
        )
        topic = {BookRecord: feed.book, TradeRecord: feed.trades, TradeFlowRecord: feed.flow}
        for rec in records:
            producer.produce(
                topic[type(rec)],
                rec.model_dump_json().encode(),
                rec.symbol,
                partition=partition[rec.symbol],
            )
            producer.poll(0)
        for symbol, line in raw:
            producer.produce(feed.raw, line, symbol, partition=partition[symbol])
            producer.poll(0)
        producer.flush(60)
        del producer, admin  # before the broker stops: their reconnect attempts only add noise
        log = work / "stream.log"
        job = subprocess.Popen(
            [sys.executable, "-m", "quantcore.cli", "stream", "--kafka", broker.bootstrap,
             "--redis", redis.address, "--checkpoint", str(work / "checkpoint"),
             "--trigger", "microbatch", "--book-topic", feed.book, "--trades-topic", feed.trades,
             "--flow-topic", feed.flow, "--raw-topic", feed.raw, "--threads", "4",
             "--jars", ",".join(str(j) for j in spark_jars()),
             "--lake", str(root / "replay"), "--lake-interval", "5 seconds"],
            stdout=log.open("wb"), stderr=subprocess.STDOUT,
            env=child_env(redis.auth(RELAY), kafka=broker.auth(kafkaacl.STREAM)),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + timeout
            while not all(history.row_count(root, t) >= n for t, n in expected.items()):
                if job.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"the job stopped short of the lake:\n{log.read_text()[-3000:]}")
                time.sleep(2)  # a bench polls; the tests wait on conditions
        finally:
            job.send_signal(signal.SIGTERM)
            try:
                job.wait(120)
            except subprocess.TimeoutExpired:
                job.kill()
                job.wait(10)
    return root


def measure(root: Path) -> None:
    """Print bytes per symbol per table, over the recorded interval and per day."""
    size: dict[tuple[str, str], int] = defaultdict(int)
    files: dict[tuple[str, str], int] = defaultdict(int)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    smallest = None
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for table in lake.TABLES:
        paths = lakestore.committed_files(root, table)
        for path in paths:
            partition = lake.partition_of(str(path))
            assert partition is not None
            size[(partition.symbol, table)] += path.stat().st_size
            files[(partition.symbol, table)] += 1
            smallest = min(smallest or path.stat().st_size, path.stat().st_size)
        if paths:
            listed = ", ".join(f"'{p}'" for p in paths)
            for symbol, low, high, n in duckdb.sql(
                f"SELECT symbol, min({lake.TIME_COLUMN}), max({lake.TIME_COLUMN}), count(*) "
                f"FROM read_parquet([{listed}], hive_partitioning = true) GROUP BY symbol"
            ).fetchall():
                counts[(symbol, table)] = n
                first[symbol] = min(first.get(symbol, low), low)
                last[symbol] = max(last.get(symbol, high), high)
    log_bytes = sum(
        p.stat().st_size
        for table in lake.TABLES
        for d in lakestore.table_dirs(root, table)
        for p in (d / lake.METADATA_DIR).iterdir()
    )
    tables = list(lake.TABLES)
    print(f"lake {root}: committed Parquet bytes per symbol, measured over the recorded interval")
    print("and extrapolated linearly to 24 h of exchange time (a day as busy as the recording)")
    print(f"{'symbol':10s} {'interval':>9s} " + "".join(f"{t:>12s}" for t in tables)
          + f"{'total':>12s}{'per day':>14s}")  # fmt: skip
    for symbol in sorted(first):
        span_ms = max(1, last[symbol] - first[symbol])
        total = sum(size[(symbol, t)] for t in tables)
        per_day = total * DAY_MS / span_ms
        print(f"{symbol:10s} {span_ms / 1000:8.0f}s "
              + "".join(f"{size[(symbol, t)]:>12,d}" for t in tables)
              + f"{total:>12,d}{per_day / 1e6:>11.1f} MB")  # fmt: skip
        for t in tables:
            day = size[(symbol, t)] * DAY_MS / span_ms
            rows = counts[(symbol, t)]
            print(f"{'':10s} {t:>9s}: {size[(symbol, t)]:,d} B, {rows:,d} rows"
                  f" ({size[(symbol, t)] / max(1, rows):.0f} B/row) in {files[(symbol, t)]} files"
                  f" -> {day / 1e6:.1f} MB/day")  # fmt: skip
    print(f"sink logs (_spark_metadata): {log_bytes:,d} B in all")
    if smallest is not None:
        print(f"smallest file: {smallest:,d} B (each live batch adds about this per table and "
              "symbol until compaction)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lake", type=Path, help="measure this lake instead of replaying")
    parser.add_argument("--recordings", type=Path, default=default_recordings_dir())
    parser.add_argument("--timeout", type=float, default=1200.0)
    args = parser.parse_args()
    if args.lake is not None:
        measure(args.lake)
        return
    recordings = sorted(args.recordings.glob("*.gz"))
    with tempfile.TemporaryDirectory(prefix="qc-bench-lake-") as tmp:
        started = time.monotonic()
        root = replay_into_lake(Path(tmp), recordings, args.timeout)
        print(f"replayed {', '.join(p.name for p in recordings)} in "
              f"{time.monotonic() - started:.0f}s")  # fmt: skip
        measure(root)


if __name__ == "__main__":
    main()
