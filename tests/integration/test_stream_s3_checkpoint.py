"""`quantcore stream` checkpointing to S3 through S3A, on real Kafka, Redis, Spark (with the
hadoop-aws jars) and moto's S3 server: the checkpoint lands as objects in the bucket, and a
restarted job resumes from it instead of reading its topics from the start again. Its lake
(`--lake s3a://...`, the same code path as a local one) lands there too: every book signal of
both runs once, read through the sink's log; `quantcore serve --lake s3a://...` answers History
with exactly those rows (quantcore.lakemirror)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from quantcore import lake, lakefiles, signalstore
from quantcore.client.history import HistoryQuery, history_rows
from quantcore.client.security import ClientCredentials
from quantcore.devservices import s3
from quantcore.devservices.ports import free_port
from quantcore.devservices.process import ChildProcess
from quantcore.devservices.programs import ServeProcess, child_env
from quantcore.events import BookRecord, Topics, TradeFlowRecord, TradeRecord
from quantcore.feed.recording import flow_from_recording, records_from_recording
from quantcore.kafkaacl import STREAM
from quantcore.localmode.source import default_recordings_dir
from quantcore.redisacl import RELAY, SERVE
from tests.fixtures.cluster import eventually

pytestmark = pytest.mark.integration

PARTITION = {"BTCUSDT": 0, "ETHUSDT": 1}
# Enough input for several micro-batches per run, little enough for a loaded 2-core machine.
RECORDS_PER_RUN = 3000
QUERIES = ("book", "trades-malformed", "trade-flow")


def _job(
    tmp_path: Path, run: int, kafka: str, redis_url: str, checkpoint: str, topics, jars, env,
    lake_uri: str,
):  # fmt: skip
    """`quantcore stream` at `redis_url` (an address), as the user `env` names."""
    command = [
        sys.executable, "-m", "quantcore.cli", "stream",
        "--kafka", kafka, "--redis", redis_url, "--checkpoint", checkpoint,
        "--trigger", "microbatch", "--book-topic", topics[0], "--trades-topic", topics[1],
        "--flow-topic", topics[2], "--threads", "4", "--jars", ",".join(jars),
        "--raw-topic", topics[3], "--lake", lake_uri, "--lake-interval", "5 seconds",
        # Compacting the sink on S3 as it runs: the recordings' days are long over, so each
        # pass merges all of a partition's files but the newest commit's (no margin).
        "--lake-compact-every", "2", "--lake-merge-window", "0.001", "--lake-merge-margin", "0",
    ]  # fmt: skip
    return ChildProcess(f"stream run {run}", command, tmp_path / f"stream-{run}.log", env=env)


def _book_sequences(
    kafka: dict[str, Any], topic: str, start: dict[int, int]
) -> list[tuple[str, int]]:
    """(symbol, sequence) of every book row in `topic` from the `start` offsets to its end."""
    consumer = Consumer(
        {
            **kafka,
            "group.id": f"check-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in start}
        consumer.assign([TopicPartition(topic, p, o) for p, o in start.items()])
        rows: list[tuple[str, int]] = []
        position = dict(start)
        while any(position[p] < ends[p] for p in start):
            message = consumer.poll(5)
            assert message is not None, f"the signals topic stopped short of {ends}"
            assert message.error() is None, message.error()
            partition, offset, payload = message.partition(), message.offset(), message.value()
            assert partition is not None
            assert offset is not None
            assert payload is not None
            position[partition] = offset + 1
            value = json.loads(payload)
            if value["kind"] == "book":
                rows.append((value["symbol"], value["sequence"]))
        return rows
    finally:
        consumer.close()


def _signals_table(endpoint: str, bucket: str, prefix: str) -> lakefiles.S3Table:
    return lakefiles.S3Table(s3.client(endpoint), bucket, f"{prefix}signals/")


def _lake_books(endpoint: str, bucket: str, prefix: str, work: Path) -> Counter[tuple[str, int]]:
    """(symbol, sequence) of every row of the `signals` table under `prefix`, counted, from
    the files a read reads (the sink's log, its merges applied), downloaded."""
    table = _signals_table(endpoint, bucket, prefix)
    rows: Counter[tuple[str, int]] = Counter()
    for uri in lakefiles.view(table):
        key = lakefiles.object_key(uri)
        local = work / key
        local.parent.mkdir(parents=True, exist_ok=True)
        table.client.download_file(bucket, key, str(local))
        partition = lake.partition_of(key)
        assert partition is not None, key
        for (sequence,) in duckdb.sql(f"SELECT sequence FROM '{local}'").fetchall():
            rows[(partition.symbol, sequence)] += 1
    return rows


def _stop(job: ChildProcess) -> None:
    """SIGTERM to the job's Python alone, as `quantcore stream` expects it (a signal to the whole
    group would stop Spark's JVM under the queries), then whatever is left of its group.

    Its exit code is not asserted: a stop while a batch runs sometimes ends in a Py4J error on
    the way out (the job's shutdown, not the checkpoint; what the test relies on is committed
    before it stops the job)."""
    os.kill(job.pid, signal.SIGTERM)
    eventually(lambda: job.exit_code() is not None, "the job's exit after SIGTERM", timeout=120)
    job.stop()


def _settled(endpoint: str, bucket: str, query_prefix: str) -> bool:
    """True when the query has batches and every one it planned is committed."""
    keys = s3.object_keys(endpoint, bucket, query_prefix)
    planned = _batches(keys, "offsets/")
    return bool(planned) and planned == _batches(keys, "commits/")


def _batches(keys: list[str], directory: str) -> set[str]:
    """Batch ids under `directory` among `keys` (directory markers and temporary files aside)."""
    names = (k.rsplit("/", 1)[1] for k in keys if f"/{directory}" in k)
    return {name for name in names if name.isdigit()}


def _end_offsets(kafka: dict[str, Any], topic: str) -> dict[int, int]:
    consumer = Consumer({**kafka, "group.id": f"ends-{uuid.uuid4().hex}"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
            for p in metadata.partitions
        }
    finally:
        consumer.close()


@pytest.mark.timeout(1800)
def test_checkpoint_on_s3_and_a_restart_resumes_from_it(
    kafka_service, redis_url, redis_service, spark_jars, spark_s3a_jars, s3_endpoint, tmp_path
):
    tag = uuid.uuid4().hex[:8]
    bucket = f"checkpoints-{tag}"
    s3.create_bucket(s3_endpoint, bucket)
    checkpoint = f"s3a://{bucket}/quantcore/{tag}"
    lake_uri = f"s3a://{bucket}/lake/{tag}"
    feed = Topics.with_prefix(f"s3-{tag}")
    kafka_service.grant(feed)
    topics = (feed.book, feed.trades, feed.flow, feed.raw)
    signals = feed.signals
    kafka_admin = kafka_service.client_config("admin")
    admin = AdminClient(kafka_admin)
    # The signals topic too: the stream user may not create topics.
    for future in admin.create_topics([NewTopic(t, 2, 1) for t in feed.all()]).values():
        future.result(30)
    client = redis.Redis.from_url(redis_url)
    # Other tests of the session use these symbols: start from no stored state.
    client.delete(*(signalstore.state_key(symbol) for symbol in PARTITION))

    records = records_from_recording(*sorted(default_recordings_dir().glob("*.gz")))
    # Trade flow starts 30 s into the recording (warm-up): some of its records go with each run.
    flows = flow_from_recording(*sorted(default_recordings_dir().glob("*.gz")))
    runs: list[list[BookRecord | TradeRecord | TradeFlowRecord]] = [
        [*records[:RECORDS_PER_RUN], *flows[:200]],
        [*records[RECORDS_PER_RUN : 2 * RECORDS_PER_RUN], *flows[200:400]],
    ]
    producer = Producer({**kafka_service.client_config("feed"), "linger.ms": 5})

    def produce(batch: list[BookRecord | TradeRecord | TradeFlowRecord]) -> dict[str, int]:
        for rec in batch:
            kinds = (BookRecord, TradeRecord, TradeFlowRecord)
            topic = topics[next(i for i, k in enumerate(kinds) if isinstance(rec, k))]
            producer.produce(
                topic, rec.model_dump_json().encode(), rec.symbol, partition=PARTITION[rec.symbol]
            )
        assert producer.flush(30) == 0
        return {r.symbol: r.seq for r in batch if isinstance(r, BookRecord)}

    def stored_book(symbol: str) -> int:
        snapshot = signalstore.read_snapshot(client, symbol)
        return snapshot["book"].sequence if "book" in snapshot else -1

    env = {
        **child_env(redis_service.auth(RELAY), kafka=kafka_service.auth(STREAM)),
        **s3.client_env(s3_endpoint),
    }
    jars = [*spark_jars, *spark_s3a_jars]
    prefix = f"quantcore/{tag}/"

    # Run 1: the first stretch of input, processed and checkpointed to the bucket, in two
    # halves committed one after the other (so run 2's commit finds two to merge before it).
    half = RECORDS_PER_RUN // 2
    first_half = {(r.symbol, r.seq) for r in runs[0][:half] if isinstance(r, BookRecord)}
    produce(runs[0][:half])
    job = _job(
        tmp_path,
        1,
        kafka_service.bootstrap,
        redis_service.address,
        checkpoint,
        topics,
        jars,
        env,
        lake_uri,
    )
    lake_prefix = f"lake/{tag}/"
    with job:
        eventually(
            lambda: (
                set(_lake_books(s3_endpoint, bucket, lake_prefix, tmp_path / "half")) >= first_half
            ),
            "run 1's first half in the lake on S3",
            timeout=900,
        )
        last_first = produce(runs[0][half:])

        def first_done() -> bool:
            job.check()  # a job that died explains itself with its log
            return all(stored_book(s) == seq for s, seq in last_first.items())

        eventually(first_done, "run 1's last books in Redis", timeout=900)
        # Every batch the book query planned (offsets/N) is committed (commits/N): stopping
        # now leaves nothing to redo, so a resumed job must not write any of it again.
        eventually(
            lambda: _settled(s3_endpoint, bucket, prefix + "book/"),
            "the book query's batches committed in the bucket",
            timeout=120,
        )
        _stop(job)
    keys_after_first = s3.object_keys(s3_endpoint, bucket, prefix)
    for query in QUERIES:
        assert f"{prefix}{query}/metadata" in keys_after_first, query
        assert any(k.startswith(f"{prefix}{query}/offsets/") for k in keys_after_first), query
    batches_first = _batches(keys_after_first, "book/commits/")
    assert batches_first

    # Run 2: new input only; the job resumes from the checkpoint in the bucket.
    resumed_from = _end_offsets(kafka_admin, signals)
    last_second = produce(runs[1])
    job = _job(
        tmp_path,
        2,
        kafka_service.bootstrap,
        redis_service.address,
        checkpoint,
        topics,
        jars,
        env,
        lake_uri,
    )
    with job:

        def second_done() -> bool:
            job.check()
            return all(stored_book(s) == seq for s, seq in last_second.items())

        eventually(second_done, "run 2's last books in Redis", timeout=900)
        eventually(
            lambda: _settled(s3_endpoint, bucket, prefix + "book/"),
            "run 2's book batches committed in the bucket",
            timeout=120,
        )
        books = {(r.symbol, r.seq) for run in runs for r in run if isinstance(r, BookRecord)}
        eventually(
            lambda: set(_lake_books(s3_endpoint, bucket, lake_prefix, tmp_path / "lake")) >= books,
            "both runs' book signals in the lake on S3",
            timeout=300,
        )
        # Run 1's two commits are older than run 2's: merged by now.
        eventually(
            lambda: lakefiles.merge_table(_signals_table(s3_endpoint, bucket, lake_prefix)).merges,
            "the job's merges of its sink on S3",
            timeout=300,
        )
        _stop(job)
    # The lake on S3: every book signal of both runs once (the restart wrote none again), read
    # through the merges the job made.
    signals_table = _signals_table(s3_endpoint, bucket, lake_prefix)
    merged = {m.file for m in lakefiles.merge_table(signals_table).merges}
    assert merged & set(lakefiles.view(signals_table))
    assert len(lakefiles.view(signals_table)) < len(lake.committed_files(signals_table.log()))
    in_lake = _lake_books(s3_endpoint, bucket, lake_prefix, tmp_path / "lake-read")
    assert set(in_lake) == books
    assert max(in_lake.values()) == 1

    # History on the lake on S3: the server mirrors the committed files a call needs.
    days = sorted({lake.partition_date(r.event_time_ms) for r in records[: 2 * RECORDS_PER_RUN]})
    span = lake.interval(days[0], days[-1])
    serve = ServeProcess(
        redis_service.address, free_port(), tmp_path / "serve.log",
        "--lake", f"s3a://{bucket}/lake", "--lake-cache", str(tmp_path / "mirror"),
        redis_auth=redis_service.auth(SERVE), env=s3.client_env(s3_endpoint),
    )  # fmt: skip
    with serve:
        serve.wait_started()
        for symbol in PARTITION:
            asked = HistoryQuery(symbol, span.start_ms, span.end_ms, fields=("sequence",))
            _, got = asyncio.run(history_rows(serve.target, asked, ClientCredentials()))
            assert [row[0] for row in got] == sorted(s for sym, s in in_lake if sym == symbol)

    rows = _book_sequences(kafka_admin, signals, resumed_from)
    assert rows, "run 2 wrote no book signals"
    # Resumed, not restarted from earliest: nothing run 1 already turned into signals comes again.
    again = [(s, seq) for s, seq in rows if seq <= last_first[s]]
    assert not again, f"{len(again)} book rows of run 1 were read again, e.g. {again[:3]}"
    assert {s for s, _ in rows} == set(PARTITION)
    keys_after_second = s3.object_keys(s3_endpoint, bucket, prefix)
    batches_second = _batches(keys_after_second, "book/commits/")
    # The batch ids continue where run 1 stopped.
    assert batches_second > batches_first
    assert min(int(b) for b in batches_second - batches_first) > max(int(b) for b in batches_first)
