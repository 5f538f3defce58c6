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
from quantcore.devservices.kafka import KafkaBroker
from quantcore.events import Topics
from quantcore.kafkaacl import STREAM
from quantcore.redisacl import RELAY, SERVE
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


def _feed_signals_topic(kafka: KafkaBroker) -> str:
    """A feed's signals topic of the test's own, with its users' ACLs."""
    topics = Topics.with_prefix(f"r{uuid.uuid4().hex[:8]}")
    kafka.grant(topics)
    return topics.signals


def test_relay_applies_rows_monotonically_and_resumes_after_its_commits(
    kafka_service, redis_url, redis_service
):
    topic = _feed_signals_topic(kafka_service)
    admin = AdminClient(kafka_service.client_config("admin"))
    for fut in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        fut.result(30)
    client = redis.Redis.from_url(redis_url)
    malformed_before = signalstore.malformed_count(client)
    a, b = (f"R{uuid.uuid4().hex[:6].upper()}{s}" for s in "AB")
    producer = Producer({**kafka_service.client_config("admin"), "linger.ms": 0})
    # In order, then a duplicate and an older row (as a replay after a restart would send).
    for seq in (1, 2, 3, 3, 2):
        producer.produce(topic, _row(a, seq, 100.0 + seq), a)
        producer.produce(topic, _row(b, seq, 200.0 + seq), b)
    producer.produce(topic, b"{not a row", a)  # a foreign record
    refused = json.dumps({"kind": "book", "valid": False, "topic": topic, "partition": 7})
    producer.produce(topic, refused.replace("}", ', "offset": 42}').encode())
    producer.flush(30)

    # The relay as its own ACL user over TLS; updates heard as the serving tier hears them.
    sub = UpdateListener(redis_service.url_for(SERVE))
    # The relay as the stream job's Kafka user and its own Redis user, as in every deployment.
    config = RelayConfig(
        kafka_service.bootstrap,
        redis_service.address,
        topic,
        redis_service.auth(RELAY),
        kafka_service.auth(STREAM),
    )
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


def test_relay_metrics_count_rows_by_outcome_and_report_its_lag(kafka_service, redis_service):
    topic = _feed_signals_topic(kafka_service)
    admin = AdminClient(kafka_service.client_config("admin"))
    for fut in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        fut.result(30)
    symbol = f"M{uuid.uuid4().hex[:6].upper()}"
    producer = Producer({**kafka_service.client_config("admin"), "linger.ms": 0})
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

    # The relay as the stream job's Kafka user and its own Redis user, as in every deployment.
    config = RelayConfig(
        kafka_service.bootstrap,
        redis_service.address,
        topic,
        redis_service.auth(RELAY),
        kafka_service.auth(STREAM),
    )
    relay = Relay(config).start()
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


def _state(client: redis.Redis, symbol: str) -> dict[str, tuple[int, float, int]]:
    """kind -> (sequence, the value, the exchange event time) as Redis holds it."""
    out = {}
    for kind, stored in signalstore.read_snapshot(client, symbol).items():
        update = signals_pb2.SignalUpdate.FromString(stored.payload)
        value = update.book.mid if kind == "book" else update.trades.tfi_1s
        out[kind] = (stored.sequence, value, update.event_time_ms)
    return out


def test_a_restarted_redis_gets_the_serving_state_back_from_the_signals_topic(
    kafka_service, redis_server
):
    """Redis restarts empty (no persistence, as deployed). The relay notices its marker is
    gone and rebuilds the newest row per symbol and kind from the records it had applied: a
    symbol that never updates again has its value back, and live rows go on meanwhile."""
    topic = _feed_signals_topic(kafka_service)
    admin = AdminClient(kafka_service.client_config("admin"))
    for fut in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        fut.result(30)
    quiet, active = (f"Q{uuid.uuid4().hex[:6].upper()}{s}" for s in "QA")
    producer = Producer({**kafka_service.client_config("admin"), "linger.ms": 0})

    def produce(symbol: str, kind: str, seq: int, value: float) -> None:
        row = json.loads(_row(symbol, seq, value))
        if kind == "trades":
            row["kind"], row["tfi_1s"] = kind, row.pop("mid")
        producer.produce(topic, json.dumps(row).encode(), symbol)

    # Newest last, plus a duplicate and an older row: the rebuild must keep seq 3 / 7.
    for seq in (1, 2, 3, 3, 2):
        produce(quiet, "book", seq, 100.0 + seq)
        produce(active, "book", seq, 200.0 + seq)
    for seq in (5, 7, 6):
        produce(quiet, "trades", seq, 300.0 + seq)
    producer.flush(30)

    config = RelayConfig(
        kafka_service.bootstrap,
        redis_server.address,
        topic,
        redis_server.auth(RELAY),
        kafka_service.auth(STREAM),
    )
    admin_redis = redis.Redis.from_url(redis_server.url)
    relay = Relay(config).start()
    try:
        want = {quiet: {"book": (3, 103.0), "trades": (7, 307.0)}, active: {"book": (3, 203.0)}}

        def held() -> bool:
            return all(
                {k: v[:2] for k, v in _state(admin_redis, s).items()} == kinds
                for s, kinds in want.items()
            )

        _wait(held, 60, "the rows in Redis")
        # A fresh Redis has no marker either: the first start "rebuilds" what it had applied
        # so far (possibly nothing), which changes no value.
        _wait(lambda: relay.rebuild is not None and relay.rebuild.done(), 30, "a first check")
        first = relay.rebuild
        assert first is not None
        assert first.failure is None
        assert held()
        before = {s: _state(admin_redis, s) for s in want}

        admin_redis.close()
        redis_server.stop()
        redis_server.start()
        admin_redis = redis.Redis.from_url(redis_server.url)
        assert signalstore.read_snapshot(admin_redis, quiet) == {}  # empty, as restarted

        # Back without a new record: from the log, exactly the values held before.
        _wait(lambda: _state(admin_redis, quiet) == before[quiet], 60, "the quiet symbol back")
        assert _state(admin_redis, active) == before[active]
        rebuild = relay.rebuild
        assert rebuild is not None
        assert rebuild is not first
        _wait(rebuild.done, 30, "the rebuild's end")
        assert rebuild.failure is None
        # The newest of each symbol and kind, once: 3 rows out of 13 records.
        assert (rebuild.written, rebuild.accepted) == (3, 3)

        # Live rows go on through the same relay.
        produce(active, "book", 4, 204.0)
        producer.flush(30)
        _wait(lambda: _state(admin_redis, active)["book"][0] == 4, 60, "a live row after")
        # The marker stays: no second rebuild on the same Redis.
        assert relay.rebuild is rebuild
    finally:
        relay.stop()
        admin_redis.close()
    assert relay.failure is None
