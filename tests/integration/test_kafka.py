"""The dev Kafka broker is real: idempotent produce and consume, in order per key."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.integration

MESSAGES = 10_000
KEYS = [f"SYM{i:02d}" for i in range(20)]


def test_ten_thousand_messages_round_trip_in_order_per_key(
    kafka_bootstrap: str, kafka_admin: dict[str, Any]
) -> None:
    topic = "round-trip"
    admin = AdminClient({**kafka_admin, "bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=4)])[topic].result(timeout=30)

    producer = Producer(
        {
            **kafka_admin,  # the harness's user over SASL_SSL, as every client
            "bootstrap.servers": kafka_bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
        }
    )
    failures: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, _message: object) -> None:
        if error is not None:
            failures.append(error)

    for seq in range(MESSAGES):
        key = KEYS[seq % len(KEYS)]
        while True:
            try:
                producer.produce(topic, key=key, value=str(seq), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)  # local queue full: let deliveries drain, then retry
        producer.poll(0)
    assert producer.flush(60) == 0
    assert failures == []

    consumer = Consumer(
        {
            **kafka_admin,  # the harness's user over SASL_SSL, as every client
            "bootstrap.servers": kafka_bootstrap,
            "group.id": "round-trip-check",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: dict[str, list[int]] = defaultdict(list)
    partitions_per_key: dict[str, set[int]] = defaultdict(set)
    count = 0
    idle_polls = 0
    try:
        while count < MESSAGES and idle_polls < 60:
            batch = consumer.consume(num_messages=1000, timeout=1.0)
            idle_polls = 0 if batch else idle_polls + 1
            for message in batch:
                assert message.error() is None, message.error()
                raw_key, value, partition = message.key(), message.value(), message.partition()
                assert raw_key is not None
                assert value is not None
                assert partition is not None
                key = raw_key.decode()
                received[key].append(int(value))
                partitions_per_key[key].add(partition)
                count += 1
    finally:
        consumer.close()

    assert count == MESSAGES
    for index, key in enumerate(KEYS):
        expected = list(range(index, MESSAGES, len(KEYS)))
        assert received[key] == expected, f"{key} out of order or incomplete"
        assert len(partitions_per_key[key]) == 1  # one key, one partition
    assert len({p for ps in partitions_per_key.values() for p in ps}) > 1
