"""Kafka topics of a MarketFeed through confluent-kafka's AdminClient.

Create what is missing, grow partitions, align config (drift is overwritten). What Kafka
cannot do (fewer partitions, another replication factor) is reported as NotSupported and
the topic keeps running as it is, as Strimzi does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from quantcore.kafkaauth import KafkaAuth
from quantcore.operator.api import MarketFeedSpec

TIMEOUT_S = 15.0


@dataclass(frozen=True)
class TopicOutcome:
    partitions: dict[str, int]  # topic -> partitions it has now
    not_supported: tuple[str, ...] = ()  # what was asked but Kafka cannot do

    @property
    def ok(self) -> bool:
        return not self.not_supported


def topic_names(spec: MarketFeedSpec) -> list[str]:
    # The stream job's output topic is named after the book topic, not configured on its own.
    return spec.kafka.topics.names().all()


def topic_config(spec: MarketFeedSpec) -> dict[str, str]:
    return {
        "retention.ms": str(spec.kafka.retention_hours * 3600 * 1000),
        "cleanup.policy": "delete",
    }


def _admin(bootstrap: str, kafka_auth: KafkaAuth | None):  # type: ignore[no-untyped-def]
    from confluent_kafka.admin import AdminClient

    # The operator's own Kafka user (quantcore.kafkaacl.OPERATOR): by default from its
    # environment (the chart's Secret), never from a MarketFeed, whose Secrets it never reads.
    auth = KafkaAuth.from_env() if kafka_auth is None else kafka_auth
    # log_level 4: warnings and worse (info-level noise on every client teardown otherwise).
    settings: dict[str, Any] = {
        **auth.client_config(),
        "bootstrap.servers": bootstrap,
        "socket.timeout.ms": 10000,
        "log_level": 4,
    }
    # librdkafka's lines through our log handler, not raw onto stderr.
    settings["logger"] = logging.getLogger(__name__).getChild("librdkafka")
    return AdminClient(settings)


def existing_partitions(
    spec: MarketFeedSpec, kafka_auth: KafkaAuth | None = None
) -> dict[str, int]:
    """Partitions of the feed's topics that exist (absent topics are left out)."""
    metadata = _admin(spec.kafka.bootstrap, kafka_auth).list_topics(timeout=TIMEOUT_S)
    wanted = set(topic_names(spec))
    return {
        name: len(t.partitions)
        for name, t in metadata.topics.items()
        if name in wanted and t.error is None
    }


def ensure(
    spec: MarketFeedSpec, partitions: int, kafka_auth: KafkaAuth | None = None
) -> TopicOutcome:
    """Make every topic exist with at least `partitions` partitions and the spec's config."""
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        NewTopic,
    )

    admin = _admin(spec.kafka.bootstrap, kafka_auth)
    config = topic_config(spec)
    metadata = admin.list_topics(timeout=TIMEOUT_S)
    not_supported: list[str] = []
    result: dict[str, int] = {}
    missing, grow = [], []
    for name in topic_names(spec):
        topic = metadata.topics.get(name)
        if topic is None or topic.error is not None:
            missing.append(NewTopic(name, partitions, spec.kafka.replication, config=config))
            result[name] = partitions
            continue
        have = len(topic.partitions)
        replicas = len(next(iter(topic.partitions.values())).replicas) if have else 0
        if replicas and replicas != spec.kafka.replication:
            not_supported.append(
                f"{name}: replication {replicas} cannot change to {spec.kafka.replication}"
            )
        if have < partitions:
            grow.append(NewPartitions(name, partitions))
        elif have > partitions:
            not_supported.append(f"{name}: has {have} partitions; Kafka cannot remove any")
        result[name] = max(have, partitions)
    if missing:
        for future in admin.create_topics(missing, request_timeout=TIMEOUT_S).values():
            _wait_allowing(future, "TOPIC_ALREADY_EXISTS")
    if grow:
        for future in admin.create_partitions(grow, request_timeout=TIMEOUT_S).values():
            _wait_allowing(future, "INVALID_PARTITIONS")
    resources = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                for k, v in config.items()
            ],
        )
        for name in topic_names(spec)
    ]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout=TIMEOUT_S)
    return TopicOutcome(partitions=result, not_supported=tuple(not_supported))


def _wait_allowing(future, allowed_code: str) -> None:  # type: ignore[no-untyped-def]
    """Wait for an admin future; a concurrent reconcile having done it first is fine."""
    from confluent_kafka import KafkaException

    try:
        future.result(timeout=TIMEOUT_S)
    except KafkaException as exc:
        if exc.args[0].name() != allowed_code:
            raise


def delete(spec: MarketFeedSpec, kafka_auth: KafkaAuth | None = None) -> list[str]:
    """Delete the feed's topics (deletionPolicy Delete). Returns the names deleted."""
    from confluent_kafka import KafkaException

    admin = _admin(spec.kafka.bootstrap, kafka_auth)
    present = [n for n in topic_names(spec) if n in existing_partitions(spec, kafka_auth)]
    if not present:
        return []
    for future in admin.delete_topics(present, operation_timeout=TIMEOUT_S).values():
        try:
            future.result(timeout=TIMEOUT_S)
        except KafkaException as exc:
            if exc.args[0].name() != "UNKNOWN_TOPIC_OR_PART":
                raise
    return present
