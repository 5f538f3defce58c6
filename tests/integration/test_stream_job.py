"""`quantcore stream` end to end on real Kafka, Redis and Spark: the repository's recordings go to
the book, trades and flow topics in the feed's format while the job runs; it is SIGKILLed mid-stream
and restarted from its checkpoint. Every published update equals the plain-Python reference,
no subscriber sees a sequence go backwards, replayed/duplicated/reordered input changes
nothing, and malformed records are counted and skipped."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from quantcore import signalstore
from quantcore.devservices.kafka import KafkaBroker
from quantcore.devservices.programs import child_env
from quantcore.devservices.redis import RedisServer
from quantcore.events import BookRecord, Topics, TradeFlowRecord, TradeRecord
from quantcore.feed.recording import Published, publish_recording
from quantcore.kafkaacl import STREAM
from quantcore.localmode.source import default_recordings_dir
from quantcore.redisacl import RELAY
from quantcore.v1 import signals_pb2
from tests.integration.updatelistener import UpdateListener
from tests.unit import stream_reference as ref

pytestmark = pytest.mark.integration

RECORDINGS = sorted(default_recordings_dir().glob("*.gz"))
PARTITION = {"BTCUSDT": 0, "ETHUSDT": 1}
BOOK_FIELDS = [f.name for f in signals_pb2.BookSignals.DESCRIPTOR.fields]
FLOW_FIELDS = [f.name for f in signals_pb2.TradeFlow.DESCRIPTOR.fields]
MALFORMED_BOOK = [b"{not json", b'{"symbol": "BTCUSDT", "seq": 1}', b"[]"]
MALFORMED_TRADES = [b'{"symbol": "ETHUSDT", "trade_id": "x"}']
MALFORMED_FLOW = [b'{"symbol": "ETHUSDT", "sequence": 5}']

Record = BookRecord | TradeRecord | TradeFlowRecord


def _start_job(
    kafka: KafkaBroker,
    redis: RedisServer,
    checkpoint: Path,
    topics: tuple[str, str, str],
    log: Path,
    trigger: str,
    jars: list[str],
):
    cmd = [
        sys.executable, "-m", "quantcore.cli", "stream",
        "--kafka", kafka.bootstrap, "--redis", redis.address, "--checkpoint", str(checkpoint),
        "--trigger", trigger, "--book-topic", topics[0], "--trades-topic", topics[1],
        "--flow-topic", topics[2], "--realtime-batch", "20 seconds", "--threads", "8",
        "--jars", ",".join(jars),
    ]  # fmt: skip
    # The connector jars resolved by development tooling, as `quantcore up` passes them; the
    # relay's own Redis user and the stream job's Kafka user (Spark's source and sink and the
    # relay: SASL_SSL), as `quantcore up` and the operator hand them over.
    env = child_env(redis.auth(RELAY), kafka=kafka.auth(STREAM))
    return subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)


def _wait(cond, timeout: float, what: str, job=None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if job is not None and job.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            pytest.fail(f"stream job exited ({job.returncode}) while waiting for {what}:\n{tail}")
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")


@pytest.fixture(scope="module")
def records() -> list[Record]:
    """Book, trade and trade-flow records as a shard publishes them, in order."""
    assert RECORDINGS, "the recordings are missing (recordings/binance-spot)"
    published: Published = publish_recording(*RECORDINGS)
    models = {"book": BookRecord, "trades": TradeRecord, "flow": TradeFlowRecord}
    return [
        models[kind].model_validate_json(value)  # type: ignore[attr-defined]
        for kind, _, value in published.records
        if kind in models
    ]


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("trigger", ["realtime", "continuous", "microbatch"])
def test_job_matches_reference_through_sigkill_and_replays(
    kafka_service, redis_url, redis_service, spark_jars, records, tmp_path, trigger
):
    feed = Topics.with_prefix(f"j{uuid.uuid4().hex[:8]}")
    kafka_service.grant(feed)
    topics = (feed.book, feed.trades, feed.flow)
    # Every topic of the feed, the signals topic too (the stream user may not create one).
    admin = AdminClient(kafka_service.client_config("operator"))
    for fut in admin.create_topics([NewTopic(t, 2, 1) for t in feed.all()]).values():
        fut.result(30)
    client = redis.Redis.from_url(redis_url)
    # The session's Redis may hold these symbols at their final sequences from the other
    # trigger's run, which would refuse every write of this one as stale.
    client.delete(*(signalstore.state_key(symbol) for symbol in PARTITION))
    malformed_before = signalstore.malformed_count(client)
    books = [r for r in records if isinstance(r, BookRecord)]
    flows = [r for r in records if isinstance(r, TradeFlowRecord)]
    producer = Producer({**kafka_service.client_config("feed"), "linger.ms": 5})

    def produce(rec: Record) -> None:
        kinds = (BookRecord, TradeRecord, TradeFlowRecord)
        topic = topics[next(i for i, k in enumerate(kinds) if isinstance(rec, k))]
        producer.produce(
            topic, rec.model_dump_json().encode(), rec.symbol, partition=PARTITION[rec.symbol]
        )

    half = len(records) // 2
    sub = UpdateListener(redis_url)
    log = tmp_path / "stream.log"
    checkpoint = tmp_path / "checkpoint"
    try:
        # First half, with malformed records among them, while the job starts.
        for i, rec in enumerate(records[:half]):
            produce(rec)
            if i == 100:
                for bad in MALFORMED_BOOK:
                    producer.produce(topics[0], bad, "BTCUSDT", partition=0)
                for bad in MALFORMED_TRADES:
                    producer.produce(topics[1], bad, "ETHUSDT", partition=1)
                for bad in MALFORMED_FLOW:
                    producer.produce(topics[2], bad, "ETHUSDT", partition=1)
        producer.flush(30)
        job = _start_job(kafka_service, redis_service, checkpoint, topics, log, trigger, spark_jars)
        # Generous: JVM start and planning take minutes on a loaded 2-core machine.
        _wait(lambda: len(sub.updates) >= 200, 900, "the first updates", job, log)
        # Mid-stream: more input arrives, then the job dies without any chance to clean up.
        for rec in records[half : half + 2000]:
            produce(rec)
        producer.flush(30)
        time.sleep(1.0)
        job.send_signal(signal.SIGKILL)
        job.wait(30)
        seen_before_kill = len(sub.updates)

        job = _start_job(kafka_service, redis_service, checkpoint, topics, log, trigger, spark_jars)
        for rec in records[half + 2000 :]:
            produce(rec)
        # Replays: an old stretch again, newest first, and the last book twice more.
        for rec in reversed(books[-300:-100]):
            produce(rec)
        for rec in (books[-1], books[-1]):
            produce(rec)
        for rec in reversed(flows[-300:-100]):
            produce(rec)
        producer.flush(30)

        last_book = {b.symbol: b.seq for b in books}
        last_flow = {f.symbol: f.sequence for f in flows}

        def done() -> bool:
            for symbol in PARTITION:
                snap = signalstore.read_snapshot(client, symbol)
                if "book" not in snap or snap["book"].sequence != last_book[symbol]:
                    return False
                if "trades" not in snap or snap["trades"].sequence != last_flow[symbol]:
                    return False
            return signalstore.malformed_count(client) - malformed_before >= 5

        _wait(done, 900, "the final state in Redis", job, log)
        time.sleep(3)  # let replays of the stale stretch arrive (they must change nothing)
        job.send_signal(signal.SIGTERM)
        try:
            job.wait(60)
        except subprocess.TimeoutExpired:
            job.kill()
            job.wait(10)
    finally:
        sub.close()
        if "job" in locals() and job.poll() is None:
            job.kill()
            job.wait(10)

    assert seen_before_kill > 0
    # Malformed records: counted once each (despite the restart), and the job kept going.
    assert signalstore.malformed_count(client) - malformed_before == len(MALFORMED_BOOK) + len(
        MALFORMED_TRADES
    ) + len(MALFORMED_FLOW)

    # Never backwards, per symbol and kind, as a subscriber sees it.
    last_seen: dict[tuple[str, str | None], int] = {}
    for u in sub.updates:
        key = (u.symbol, u.WhichOneof("body"))
        assert u.sequence > last_seen.get(key, -1), (
            f"{key} went from {last_seen[key]} to {u.sequence}"
        )
        last_seen[key] = u.sequence

    # Every published value equals the reference for its sequence.
    book_by_seq = {(b.symbol, b.seq): b for b in books}
    flow_by_seq = {(f.symbol, f.sequence): f for f in flows}
    mismatches = []
    for u in sub.updates:
        got: signals_pb2.BookSignals | signals_pb2.TradeFlow
        if u.WhichOneof("body") == "book":
            expected = ref.book(book_by_seq[(u.symbol, u.sequence)])
            got, fields = u.book, BOOK_FIELDS
        else:
            expected = ref.trade_flow(flow_by_seq[(u.symbol, u.sequence)])
            got, fields = u.trades, FLOW_FIELDS
        for name in fields:
            if not ref.close(float(getattr(got, name)), float(expected[name])):
                mismatches.append((u.symbol, u.sequence, name, getattr(got, name), expected[name]))
        assert u.hops.kafka_append_ns > 0
        assert u.hops.sink_write_ns >= u.hops.stream_compute_ns > 0
    assert not mismatches, mismatches[:5]
    assert {k for k, _ in last_seen} == set(PARTITION)

    # The final state equals the reference of the newest input.
    for symbol in PARTITION:
        snap = signalstore.read_snapshot(client, symbol)
        stored = signals_pb2.SignalUpdate.FromString(snap["book"].payload)
        expected = ref.book(next(b for b in reversed(books) if b.symbol == symbol))
        for name in BOOK_FIELDS:
            assert ref.close(float(getattr(stored.book, name)), float(expected[name])), name
        flow = signals_pb2.SignalUpdate.FromString(snap["trades"].payload)
        assert flow.sequence == last_flow[symbol]
        expected_flow = ref.trade_flow(next(f for f in reversed(flows) if f.symbol == symbol))
        for name in FLOW_FIELDS:
            assert ref.close(float(getattr(flow.trades, name)), float(expected_flow[name])), name
