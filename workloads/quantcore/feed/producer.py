"""The shard's Kafka producer: idempotent, acks=all, key = symbol, partition from the routing table.

`produce` never waits for a single message: it hands bytes to librdkafka and serves delivery
callbacks with `poll(0)`. When librdkafka's queue is full it polls until there is room
(back-pressure), so nothing handed to it is dropped on the floor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from quantcore.events import Topics
from quantcore.feed.normalizer import QUARANTINE
from quantcore.kafkaauth import KafkaAuth

log = logging.getLogger(__name__)


def producer_config(
    bootstrap: str, kafka_auth: KafkaAuth | None = None, **overrides: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {
        # The feed user's credentials (quantcore.kafkaacl.FEED): it may write its topics only.
        **(kafka_auth or KafkaAuth()).client_config(),
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,  # implies acks=all and ordered, de-duplicated retries
        "acks": "all",
        # A record waits up to this long for its batch. Short by default: the pipeline is
        # judged on latency. librdkafka's broker thread costs ~13-21 us of CPU per diff at
        # 10 ms (a wake-up and a small batch per partition each time) and ~6 us at 25 ms
        # (bench/feed_throughput.py), so a throughput-bound shard sets `--linger-ms 25`.
        "linger.ms": 5,
        # Reports only for failures: no Python callback per message on the hot path; the
        # acknowledged count is what was produced minus failures minus what is still queued.
        "delivery.report.only.error": True,
        "batch.num.messages": 10_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        "delivery.timeout.ms": 120_000,
    }
    config.update(overrides)
    return config


class FeedProducer:
    """Routes normalizer output (kind, symbol, value) to topic + partition and counts deliveries."""

    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        partition_of: Callable[[str], int | None],
        *,
        on_error: Callable[[str], None] | None = None,
        config: Mapping[str, Any] | None = None,
        kafka_auth: KafkaAuth | None = None,
    ) -> None:
        from confluent_kafka import Producer

        settings = producer_config(bootstrap, kafka_auth, **dict(config or {}))
        settings["on_delivery"] = self._delivery  # one callback for the producer, not per record
        # librdkafka's own lines through our handler (served by poll), not raw onto stderr.
        settings["logger"] = log.getChild("librdkafka")
        self._producer = Producer(settings)
        self._topics = topics.by_kind()
        self._partition_of = partition_of
        self._on_error = on_error
        self.produced = 0
        self.failed = 0
        self.unpartitioned = 0
        self._since_poll = 0
        self._keys: dict[str, bytes] = {}  # symbol -> its Kafka key, encoded once

    def _delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            return
        self.failed += 1
        key = msg.key()
        log.error(
            "delivery to %s failed: %s",
            msg.topic(),
            err,
            extra={
                "symbol": key.decode(errors="replace") if key else None,
                "topic": msg.topic(),
                "partition": msg.partition(),
            },
        )
        if self._on_error is not None:
            self._on_error(str(err))

    def emit(self, kind: str, symbol: str | None, value: bytes) -> None:
        """The normalizer's emit callback (the hot path: two calls per applied diff)."""
        topic = self._topics[kind]
        if symbol is None:
            # Only quarantine records can lack a symbol: let Kafka pick a partition.
            self._produce(topic, value, None, -1)
            return
        partition = self._partition_of(symbol)
        if partition is None:
            # A symbol that just left the routing table: nowhere consistent to put it.
            self.unpartitioned += 1
            if kind != QUARANTINE:
                return
            partition = -1  # librdkafka's "unassigned"
        key = self._keys.get(symbol)
        if key is None:
            key = self._keys[symbol] = symbol.encode()
        try:
            self._producer.produce(topic, value, key, partition)
        except BufferError:
            self._produce(topic, value, key, partition)
            return
        self.produced += 1
        self._since_poll += 1
        if self._since_poll >= 1000:
            self._since_poll = 0
            self._producer.poll(0)

    def _produce(self, topic: str, value: bytes, key: bytes | None, partition: int) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, partition)
                break
            except BufferError:
                # librdkafka's local queue is full: serve callbacks until it drains a little.
                self._producer.poll(0.05)
        self.produced += 1
        self._since_poll += 1
        if self._since_poll >= 1000:
            self._since_poll = 0
            self._producer.poll(0)

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every produced message to be acknowledged; returns how many are still queued."""
        remaining: int = self._producer.flush(timeout)
        return remaining

    @property
    def in_flight(self) -> int:
        """Records handed to librdkafka and not yet acknowledged (or failed)."""
        return len(self._producer)

    @property
    def delivered(self) -> int:
        """Records the brokers acknowledged (acks=all)."""
        return self.produced - self.failed - len(self._producer)
