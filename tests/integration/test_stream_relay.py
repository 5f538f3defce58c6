"""The relay on real Kafka and Redis (no Spark): signals-topic rows, as the job's queries write
them, reach Redis through the compare-and-set; duplicates and reordering never move a value
back, refused input is counted, foreign records are counted and skipped, and a restarted relay
resumes after the offsets it committed."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import REGISTRY

from quantcore import signalstore
from quantcore.stream.relay import Relay, RelayConfig
from quantcore.v1 import signals_pb2
from tests.integration.updatelistener import UpdateListener

pytestmark = pytest.mark.integration


def _row(symbol: str, seq: int, mid: float) -> bytes:
    return json.dumps(
        {
            "kind": "book",
            "valid": True,
            "topic": "book",
            "partition": 0,
            "offset": seq,
            "symbol": symbol,
            "sequence": seq,
            "event_time_ms": 1_700_000_000_000 + seq,
            "feed_publish_ns": time.time_ns(),
            "mid": mid,
        }
    ).encode()


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def test_relay_applies_rows_monotonically_and_resumes_after_its_commits(kafka_bootstrap, redis_url):
    topic = f"signals-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for fut in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        fut.result(30)
    client = redis.Redis.from_url(redis_url)
    malformed_before = signalstore.malformed_count(client)
    a, b = (f"R{uuid.uuid4().hex[:6].upper()}{s}" for s in "AB")
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 0})
    # In order, then a duplicate and an older row (as a replay after a restart would send).
    for seq in (1, 2, 3, 3, 2):
        producer.produce(topic, _row(a, seq, 100.0 + seq), a)
        producer.produce(topic, _row(b, seq, 200.0 + seq), b)
    producer.produce(topic, b"{not a row", a)  # a foreign record
    refused = json.dumps({"kind": "book", "valid": False, "topic": topic, "partition": 7})
    producer.produce(topic, refused.replace("}", ', "offset": 42}').encode())
    producer.flush(30)

    sub = UpdateListener(redis_url)
    config = RelayConfig(kafka_bootstrap, redis_url, topic)
    relay = Relay(config).start()
    try:
        _wait(lambda: relay.applied >= 10, 60, "the first rows")
        _wait(lambda: signalstore.malformed_count(client) - malformed_before >= 2, 10, "counts")
    finally:
        relay.stop()
    assert relay.failure is None
    assert signalstore.read_snapshot(client, a)["book"].sequence == 3
    assert signalstore.malformed_count(client) - malformed_before == 2

    # A new relay (a restarted driver) starts after the committed offsets: only new rows.
    producer.produce(topic, _row(a, 4, 104.0), a)
    producer.flush(30)
    relay = Relay(config).start()
    try:
        _wait(lambda: signalstore.read_snapshot(client, a)["book"].sequence == 4, 60, "seq 4")
        time.sleep(0.5)
    finally:
        relay.stop()
        sub.close()
    assert relay.failure is None
    assert relay.applied == 1

    seen = [(u.symbol, u.sequence) for u in sub.updates]
    assert [s for sym, s in seen if sym == a] == [1, 2, 3, 4]
    assert [s for sym, s in seen if sym == b] == [1, 2, 3]
    stored = signalstore.read_snapshot(client, a)["book"]
    update = signals_pb2.SignalUpdate.FromString(stored.payload)
    assert update.book.mid == 104.0
    assert update.hops.sink_write_ns >= update.hops.stream_compute_ns > 0


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _lag(topic: str) -> float | None:
    """The relay's reported lag on partition 0 of `topic`, None until it reports one."""
    return REGISTRY.get_sample_value(
        "quantcore_relay_consumer_lag", {"topic": topic, "partition": "0"}
    )


def test_relay_metrics_count_rows_by_outcome_and_report_its_lag(kafka_bootstrap, redis_url):
    topic = f"signals-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for fut in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        fut.result(30)
    symbol = f"M{uuid.uuid4().hex[:6].upper()}"
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 0})
    for seq in (1, 2, 3, 3, 2):  # 3 applied, then a duplicate and an older row: 2 stale
        producer.produce(topic, _row(symbol, seq, 100.0 + seq), symbol)
    producer.produce(topic, b"{not a row", symbol)  # malformed: not a row of the job
    refused = json.dumps({"kind": "book", "valid": False, "topic": topic, "partition": 0})
    producer.produce(topic, refused.replace("}", ', "offset": 9}').encode())  # malformed marker
    producer.flush(30)
    before = {
        outcome: _sample("quantcore_relay_rows_total", outcome=outcome)
        for outcome in ("applied", "stale", "malformed")
    }
    received = _sample("quantcore_relay_rows_received_total")

    relay = Relay(RelayConfig(kafka_bootstrap, redis_url, topic)).start()
    try:
        _wait(lambda: _sample("quantcore_relay_rows_received_total") - received >= 7, 60, "7 rows")
        _wait(
            lambda: (
                _sample("quantcore_relay_rows_total", outcome="malformed") - before["malformed"]
                >= 2
            ),
            10,
            "the rows' outcomes",
        )
        # librdkafka's statistics (every 5 s) report the partition caught up.
        _wait(
            lambda: _lag(topic) == 0.0,
            30,
            "the consumer lag",
        )
    finally:
        relay.stop()
    assert relay.failure is None
    delta = {o: _sample("quantcore_relay_rows_total", outcome=o) - n for o, n in before.items()}
    assert delta == {"applied": 3.0, "stale": 2.0, "malformed": 2.0}
    assert _sample("quantcore_relay_rows_received_total") - received == 7.0
    assert _sample("quantcore_relay_last_record_timestamp_seconds") > time.time() - 300
