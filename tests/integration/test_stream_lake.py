"""The lake sink of `quantcore stream` on real Kafka, Redis and Spark: a slice of the repository's
recordings goes through the job, whose driver (Python and JVM, the whole process group) is
SIGKILLed while a lake batch is being written, then restarted on the same checkpoint and lake.

Afterwards the lake, read as `quantcore history` reads it (through the sinks' logs), holds every
published signal row once: the same (symbol, sequence) set as the signals topic, the same values
and hop timestamps as published there, each equal to the plain-Python reference, and every
input book and trade once. `quantcore history` returns the same rows as CSV and Parquet.

The raw topic (the recording lines a shard takes in) goes through the same kill: the `raw`
table holds each line once, and read back as recordings (quantcore.feed.archive) it is the
recordings' own lines, which a shard turns into the very same records."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from quantcore import history, lake, lakecompaction, lakefiles, lakestore
from quantcore.devservices.process import log_tail
from quantcore.devservices.programs import child_env
from quantcore.events import BookRecord, Topics, TradeFlowRecord, TradeRecord
from quantcore.feed.archive import OWN_MARKER, export
from quantcore.feed.recording import (
    RAW,
    Published,
    flow_from_recording,
    publish_recording,
    read_recording,
    records_from_recording,
)
from quantcore.kafkaacl import STREAM
from quantcore.localmode.source import default_recordings_dir
from quantcore.redisacl import RELAY
from quantcore.v1 import signals_pb2
from tests.fixtures.cluster import eventually
from tests.unit import stream_reference as ref

pytestmark = pytest.mark.integration

RECORDINGS = sorted(default_recordings_dir().glob("*.gz"))
PARTITION = {"BTCUSDT": 0, "ETHUSDT": 1}
BOOK_FIELDS = [f.name for f in signals_pb2.BookSignals.DESCRIPTOR.fields]
FLOW_FIELDS = [f.name for f in signals_pb2.TradeFlow.DESCRIPTOR.fields]
HOPS = ("exchange_event_ns", "feed_receive_ns", "feed_publish_ns", "kafka_append_ns")
# Records and flow records of the three parts: before the kill, during it (a big one, so its
# lake batch takes a while to write), after it.
PARTS = ((0, 2500, 0, 150), (2500, 14000, 150, 2000), (14000, 16500, 2000, 2150))
RAW_PARTS = ((0, 3000), (3000, 60000), (60000, None))  # raw lines, the same three parts
LAKE_INTERVAL = "2 seconds"
# The job compacts its sink while it runs, the kill included: every 2 s, whatever its newest
# commit is past (no margin; the recordings' days are long over, so a pass merges all of a
# partition's files but the newest commit's into one).
COMPACTION = (
    "--lake-compact-every", "2", "--lake-merge-window", "0.001", "--lake-merge-margin", "0",
)  # fmt: skip
MERGED = lakefiles.merged_name()[: len("part-merged-")]

Record = BookRecord | TradeRecord | TradeFlowRecord


class Job:
    """`quantcore stream` with a lake, in a process group of its own (Python and its JVM), so
    a kill takes the whole driver at once, as a crashed pod would."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        self.process = subprocess.Popen(
            argv, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def check(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"stream job exited ({self.process.returncode}):\n{log_tail(self.log)}")

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            # SIGTERM to the Python alone, as `quantcore stream` expects; then the group.
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(120)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)


def _uncommitted(root: Path) -> set[Path]:
    """Parquet files in the lake that the sink's log does not commit and no compaction made:
    a batch being written (the file sink writes each file under its final name and logs the
    batch once all are written)."""
    found: set[Path] = set()
    for table in lake.TABLES:
        table_dir = root / "sink" / table
        logged = lake.committed_files(lakefiles.LocalTable(table_dir).log())
        listed = {p for p in table_dir.rglob("*.parquet") if not p.name.startswith(MERGED)}
        found |= listed - {Path(lake.local_path(uri)) for uri in logged}
    return found


def _watch(probe, what: str, timeout: float, job: Job):
    """Polls `probe` every 10 ms until it returns something truthy: a batch's write lasts
    well under a second here, too short for `eventually`'s 200 ms steps to land in reliably."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.check()
        result = probe()
        if result:
            return result
        time.sleep(0.01)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def _lake_rows(root: Path, table: str) -> list[dict[str, Any]]:
    """Every row of `table`, read through the sinks' logs (as `quantcore history` does)."""
    files = lakestore.committed_files(root, table)
    if not files:
        return []
    sources = ", ".join(f"'{f}'" for f in files)
    result = duckdb.sql(f"SELECT * FROM read_parquet([{sources}], hive_partitioning = true)")
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def _published(kafka: dict[str, Any], topic: str) -> list[dict[str, Any]]:
    """Every valid row the job wrote to the signals topic, from its start to its end."""
    consumer = Consumer({**kafka, "group.id": f"lake-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        position = dict.fromkeys(partitions, 0)
        rows = []
        while any(position[p] < ends[p] for p in partitions):
            message = consumer.poll(5)
            assert message is not None, f"the signals topic stopped short of {ends}"
            assert message.error() is None, message.error()
            position[message.partition()] = (message.offset() or 0) + 1
            row = json.loads(message.value() or b"{}")
            if row["valid"]:
                rows.append(row)
        return rows
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def lake_run(kafka_service, redis_service, spark_jars, tmp_path_factory):
    """Runs the job over the slice with a kill mid-write; returns what the checks need."""
    assert RECORDINGS, "the recordings are missing (recordings/binance-spot)"
    tmp = tmp_path_factory.mktemp("lake")
    feed = Topics.with_prefix(f"lake{uuid.uuid4().hex[:8]}")
    kafka_service.grant(feed)
    admin = AdminClient(kafka_service.client_config("operator"))
    for future in admin.create_topics([NewTopic(t, 2, 1) for t in feed.all()]).values():
        future.result(30)
    records = records_from_recording(*RECORDINGS)
    flows = flow_from_recording(*RECORDINGS)
    raw = [(symbol, value) for kind, symbol, value in publish_recording(*RECORDINGS).records
           if kind == RAW]  # fmt: skip
    raw_parts = [raw[first:last] for first, last in RAW_PARTS]
    parts: list[list[Record]] = [
        [*records[first:last], *flows[first_flow:last_flow]]
        for first, last, first_flow, last_flow in PARTS
    ]
    # A part's records and raw lines queued at once: more than librdkafka's default queue.
    producer = Producer(
        {
            **kafka_service.client_config("feed"),
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    topic_of = {BookRecord: feed.book, TradeRecord: feed.trades, TradeFlowRecord: feed.flow}

    def produce(part: list[Record], lines: list[tuple[str | None, bytes]]) -> None:
        for rec in part:
            producer.produce(
                topic_of[type(rec)],
                rec.model_dump_json().encode(),
                rec.symbol,
                partition=PARTITION[rec.symbol],
            )
        for symbol, line in lines:
            assert symbol is not None
            producer.produce(feed.raw, line, symbol, partition=PARTITION[symbol])
        assert producer.flush(30) == 0

    root = tmp / "lake"
    checkpoint = tmp / "checkpoint"
    argv = [
        sys.executable, "-m", "quantcore.cli", "stream",
        "--kafka", kafka_service.bootstrap, "--redis", redis_service.address,
        "--checkpoint", str(checkpoint), "--trigger", "microbatch",
        "--book-topic", feed.book, "--trades-topic", feed.trades, "--flow-topic", feed.flow,
        "--raw-topic", feed.raw,
        "--threads", "4", "--jars", ",".join(spark_jars),
        "--lake", str(root / "sink"), "--lake-interval", LAKE_INTERVAL, *COMPACTION,
    ]  # fmt: skip
    env = child_env(redis_service.auth(RELAY), kafka=kafka_service.auth(STREAM))
    produce(parts[0], raw_parts[0])
    job = Job(argv, tmp / "stream-1.log", env)
    try:

        def first_rows() -> bool:
            job.check()
            return bool(lakestore.committed_files(root, "signals"))

        eventually(first_rows, "the lake's first committed signal rows", timeout=900)
        produce(parts[1], raw_parts[1])

        # Kill the driver while a lake batch's files are being written.
        orphans = _watch(lambda: _uncommitted(root), "a lake batch being written", 300, job)
        job.kill()
        # Whatever else the killed batch had begun: the files no log will ever commit.
        orphans |= _uncommitted(root)

        job = Job(argv, tmp / "stream-2.log", env)

        def complete(through: int) -> bool:
            """The lake holds a row for each input of parts[: through + 1]."""
            job.check()
            done = parts[: through + 1]
            books = sum(isinstance(r, BookRecord) for part in done for r in part)
            lines = sum(len(lines) for lines in raw_parts[: through + 1])
            return (
                history.row_count(root, "signals") >= books
                and history.row_count(root, "flow")
                >= sum(isinstance(r, TradeFlowRecord) for part in done for r in part)
                and history.row_count(root, "books") >= books
                and history.row_count(root, "trades")
                >= sum(isinstance(r, TradeRecord) for part in done for r in part)
                and history.row_count(root, "raw") >= lines
            )

        # The last part once the restarted job committed the rest: its batches come after, so
        # the compactor has two commits to merge before the newest, in every table.
        eventually(lambda: complete(1), "the first two parts' rows in the lake", timeout=900)
        produce(parts[2], raw_parts[2])
        books = [r for part in parts for r in part if isinstance(r, BookRecord)]
        trades = [r for part in parts for r in part if isinstance(r, TradeRecord)]
        part_flows = [r for part in parts for r in part if isinstance(r, TradeFlowRecord)]
        eventually(lambda: complete(2), "every input's row in the lake", timeout=900)
        wanted = {("book", b.symbol, b.seq) for b in books} | {
            ("trades", f.symbol, f.sequence) for f in part_flows
        }
        admin_kafka = kafka_service.client_config("admin")

        def all_published() -> bool:
            job.check()
            sent = _published(admin_kafka, feed.signals)
            return wanted <= {(r["kind"], r["symbol"], r["sequence"]) for r in sent}

        # The live queries run beside the lake's, each at its own pace.
        eventually(all_published, "every input's row on the signals topic", timeout=300)

        def compacted() -> bool:
            job.check()
            tables = [lakefiles.LocalTable(root / "sink" / t) for t in lake.TABLES]
            return all(lakefiles.merge_table(t).merges for t in tables)

        # Files older than the newest commit by the clock margin are merged by now.
        eventually(compacted, "the job's merges in every table", timeout=300)
    finally:
        job.stop()
    return {
        "root": root,
        "books": books,
        "trades": trades,
        "flows": part_flows,
        "raw": raw,
        "published": _published(admin_kafka, feed.signals),
        "orphans": orphans,
    }


@pytest.mark.timeout(2400)
def test_the_job_merged_its_sink_while_it_wrote_it(lake_run):
    """The rows' checks here all read through these merges: the kill happened with the
    compactor running."""
    for table in lake.TABLES:
        files = lakefiles.LocalTable(lake_run["root"] / "sink" / table)
        merges = lakefiles.merge_table(files).merges
        assert merges, table
        # A recording's day is long over: each merge is its partition's whole day so far.
        assert all(m.start_ms == 0 for m in merges), table
        logged = lake.committed_files(files.log())
        assert len(lakestore.committed_files(lake_run["root"], table)) < len(logged), table
        assert all(Path(lake.local_path(m.file)).is_file() for m in merges), table


def _key_counts(rows: list[dict[str, Any]], sequence: str) -> Counter[tuple[str, int]]:
    return Counter((r["symbol"], r[sequence]) for r in rows)


@pytest.mark.timeout(2400)
def test_lake_signals_equal_the_published_rows(lake_run):
    published = lake_run["published"]
    for table, kind, fields, records, key in (
        ("signals", "book", BOOK_FIELDS, lake_run["books"], "seq"),
        ("flow", "trades", FLOW_FIELDS, lake_run["flows"], "sequence"),
    ):
        rows = _lake_rows(lake_run["root"], table)
        sent = {(r["symbol"], r["sequence"]): r for r in published if r["kind"] == kind}
        # Same sequences: every published row is in the lake, and nothing else is.
        assert set(_key_counts(rows, "sequence")) == set(sent), table
        by_key = {(r.symbol, getattr(r, key)): r for r in records}
        mismatches = []
        for row in rows:
            out = sent[(row["symbol"], row["sequence"])]
            expected = (
                ref.book(by_key[(row["symbol"], row["sequence"])])
                if kind == "book"
                else (ref.trade_flow(by_key[(row["symbol"], row["sequence"])]))
            )
            for name in fields:
                got = float("nan") if row[name] is None else float(row[name])
                # The value published (to_json leaves out nulls) and the reference's.
                if not ref.close(got, float(out.get(name, float("nan")))) or not ref.close(
                    got, float(expected[name])
                ):
                    mismatches.append((table, row["symbol"], row["sequence"], name, got))
            for name in (*HOPS, "event_time_ms", "partition", "offset"):
                if row[name] != out[name]:
                    mismatches.append((table, row["symbol"], row["sequence"], name, row[name]))
            assert str(row["date"]) == lake.partition_date(row["event_time_ms"])
        assert not mismatches, mismatches[:5]


@pytest.mark.timeout(2400)
def test_a_driver_killed_mid_write_leaves_no_duplicate_and_no_hole(lake_run):
    root = lake_run["root"]
    expected = {
        "signals": ({(b.symbol, b.seq) for b in lake_run["books"]}, "sequence"),
        "books": ({(b.symbol, b.seq) for b in lake_run["books"]}, "seq"),
        "trades": ({(t.symbol, t.trade_id) for t in lake_run["trades"]}, "trade_id"),
        "flow": ({(f.symbol, f.sequence) for f in lake_run["flows"]}, "sequence"),
    }
    for table, (keys, sequence) in expected.items():
        counts = _key_counts(_lake_rows(root, table), sequence)
        duplicates = [k for k, n in counts.items() if n > 1]
        assert not duplicates, (table, duplicates[:5])
        assert set(counts) == keys, (table, sorted(keys - set(counts))[:5])
    # Each raw line once: the same multiset as produced (the lines themselves repeat nowhere).
    lines = Counter(
        (r["symbol"], b"%d %s" % (r["recv_ns"], r["frame"].encode()))
        for r in _lake_rows(root, "raw")
    )
    assert lines == Counter(lake_run["raw"])
    # The kill left files of its batch behind (half-written, or whole with rows the replayed
    # batch wrote again): a directory listing would read them; the logs never name them.
    orphans = lake_run["orphans"]
    assert orphans
    committed = {p for table in lake.TABLES for p in lakestore.committed_files(root, table)}
    assert not committed & orphans
    assert all(path.exists() for path in orphans)


def _history(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quantcore.cli", "history", "--lake", str(root), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.timeout(2400)
def test_history_returns_the_lake_rows_as_csv_and_parquet(lake_run, tmp_path):
    root = lake_run["root"]
    rows = [r for r in _lake_rows(root, "signals") if r["symbol"] == "BTCUSDT"]
    days = sorted({str(r["date"]) for r in rows})
    fields = "sequence,mid,obi_5,kafka_append_ns"
    done = _history(
        root, "BTCUSDT", "--from", days[0], "--to", days[-1], "--format", "csv", "--fields", fields
    )
    assert done.returncode == 0, done.stderr
    table = list(csv.reader(io.StringIO(done.stdout)))
    assert table[0] == fields.split(",")
    expected = sorted(rows, key=lambda r: (r["event_time_ms"], r["sequence"]))
    assert [int(line[0]) for line in table[1:]] == [r["sequence"] for r in expected]
    assert all(
        float(line[1]) == r["mid"] and int(line[3]) == r["kafka_append_ns"]
        for line, r in zip(table[1:], expected, strict=True)
    )

    out = tmp_path / "btc.parquet"
    done = _history(
        root, "BTCUSDT", "--from", days[0], "--to", days[-1], "--format", "parquet",
        "--output", str(out), "--kind", "trades", "--fields", "trade_id,price,qty",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = duckdb.sql(f"SELECT trade_id, price, qty FROM '{out}'").fetchall()
    trades = sorted(
        (t for t in lake_run["trades"] if t.symbol == "BTCUSDT"),
        key=lambda t: (t.event_time_ms, t.trade_id),
    )
    assert got == [(t.trade_id, t.price, t.qty) for t in trades]


def _marker(line: bytes) -> bool:
    """A shard's own reset marker: archived, but no exchange frame, so no recording's line."""
    return line.split(b" ", 1)[1].startswith(OWN_MARKER)


def _by_symbol(published: Published) -> dict[tuple[str, str | None], list[bytes]]:
    """A shard's records per (kind, symbol), in order."""
    out: dict[tuple[str, str | None], list[bytes]] = {}
    for kind, symbol, value in published.records:
        out.setdefault((kind, symbol), []).append(value)
    return out


@pytest.mark.timeout(2400)
def test_the_archive_reads_back_as_the_recordings(lake_run, tmp_path):
    root, raw = lake_run["root"], lake_run["raw"]
    first = min(int(line.split(b" ", 1)[0]) for _, line in raw)
    last = max(int(line.split(b" ", 1)[0]) for _, line in raw)
    whole = lake.Interval(first // 1_000_000, last // 1_000_000 + 1)
    exported = export(root, whole, tmp_path / "whole")
    assert {e.symbol for e in exported} == set(PARTITION)
    for item in exported:
        # Byte for byte the lines the shard took in, in its order (markers are no frames).
        lines = [b"%d %s" % (x.recv_ns, x.frame) for x in read_recording(item.path)]
        assert lines == [v for s, v in raw if s == item.symbol and not _marker(v)], item.symbol
        assert item.history == 0
    # So a shard makes the same books, trades and trade flow of them, byte for byte.
    again = _by_symbol(publish_recording(*(e.path for e in exported)))
    original = _by_symbol(publish_recording(*RECORDINGS))
    assert again == original

    # An interval from the middle: each recording starts at the newest snapshot before it (led
    # by the diffs received before it that it does not cover).
    middle = first + (last - first) * 2 // 5
    span = lake.Interval(middle // 1_000_000, last // 1_000_000 + 1)
    for item in export(root, span, tmp_path / "middle"):
        recorded = list(read_recording(item.path))
        assert sum(x.is_snapshot for x in recorded[: item.history]) == 1
        assert item.history == sum(x.recv_ns < span.start_ms * 1_000_000 for x in recorded) > 0
        inside = [b"%d %s" % (x.recv_ns, x.frame) for x in recorded[item.history :]]
        assert inside == [
            v
            for s, v in raw
            if s == item.symbol
            and int(v.split(b" ", 1)[0]) >= span.start_ms * 1_000_000
            and not _marker(v)
        ]


def _as_set(rows: list[dict[str, Any]]) -> Counter[str]:
    return Counter(repr(sorted(row.items())) for row in rows)


@pytest.mark.timeout(2400)
def test_compacting_the_closed_sink_keeps_every_row_in_a_file_per_partition(lake_run):
    """Last in the module: it rewrites the sink the tests above read. The job has stopped."""
    root = lake_run["root"]
    before = {table: _lake_rows(root, table) for table in lake.TABLES}
    files = {table: lakestore.committed_files(root, table) for table in lake.TABLES}
    days = sorted({str(r["date"]) for r in before["signals"]})
    csv_args = ("BTCUSDT", "--from", days[0], "--to", days[-1], "--format", "csv")
    history_before = _history(root, *csv_args)
    assert history_before.returncode == 0, history_before.stderr

    assert lakecompaction.compact(root)
    merged = 0
    for table in lake.TABLES:
        after = lakestore.committed_files(root, table)
        partitions = {lake.partition_of(str(p)) for p in files[table]}
        assert len(after) == len(partitions), table
        merged += len(files[table]) - len(after)
        assert _as_set(_lake_rows(root, table)) == _as_set(before[table]), table
        # The merged files replaced the small ones, which are gone.
        assert not any(p.exists() for p in set(files[table]) - set(after)), table
    assert merged > 0
    history_after = _history(root, *csv_args)
    assert history_after.stdout == history_before.stdout  # same rows, same order
    # Files no log named (the killed batch's) are not the compaction's to judge.
    assert all(path.exists() for path in lake_run["orphans"])
    assert lakecompaction.compact(root) == []  # nothing left to merge
