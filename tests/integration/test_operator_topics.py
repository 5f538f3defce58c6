"""The operator's topic reconciler against a real Kafka broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import pytest

from quantcore.devservices.kafka import KafkaBroker
from quantcore.operator import topics
from quantcore.operator.api import MarketFeedSpec

pytestmark = pytest.mark.integration
T = TypeVar("T")


def read_until(read: Callable[[], T], want: T) -> T:
    """What `read` returns once it returns `want`, or after 10 s: the broker applies an
    accepted admin change to its metadata a moment later."""
    deadline = time.monotonic() + 10
    while True:
        have = read()
        if have == want or time.monotonic() > deadline:
            return have
        time.sleep(0.1)


def settled(s: MarketFeedSpec, want: dict[str, int]) -> dict[str, int]:
    """Topic partitions once broker metadata has caught up with an admin change (or 10 s)."""
    return read_until(lambda: topics.existing_partitions(s), want)


def spec(bootstrap: str, prefix: str, **kafka: object) -> MarketFeedSpec:
    return MarketFeedSpec.model_validate(
        {
            "image": "q:1",
            "symbols": ["BTCUSDT"],
            "spark": {"image": "s:1"},
            "kafka": {
                "bootstrap": bootstrap,
                "topics": {
                    "raw": f"{prefix}.raw",
                    "book": f"{prefix}.book",
                    "trades": f"{prefix}.trades",
                    "quarantine": f"{prefix}.quarantine",
                    # Every topic named: a default name would be shared with other tests.
                    "flow": f"{prefix}.flow",
                },
                **kafka,
            },
        }
    )


def test_create_grow_refuse_shrink_align_and_delete(
    kafka_service: KafkaBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    s = spec(kafka_service.bootstrap, prefix, retentionHours=2)
    kafka_service.grant(s.kafka.topics.names())
    # The operator's own user from its environment, as the chart hands it over.
    for key, value in kafka_service.auth("operator").env().items():
        monkeypatch.setenv(key, value)
    first = topics.ensure(s, 3)
    assert first.ok
    assert settled(s, dict.fromkeys(topics.topic_names(s), 3)) == dict.fromkeys(
        topics.topic_names(s), 3
    )

    # Idempotent, then grows.
    assert topics.ensure(s, 3).partitions == first.partitions
    grown = topics.ensure(s, 5)
    assert grown.ok
    five = dict.fromkeys(topics.topic_names(s), 5)
    assert settled(s, five) == five

    # Fewer partitions: NotSupported, and the topic keeps what it has.
    shrink = topics.ensure(s, 2)
    assert not shrink.ok
    assert "cannot remove" in shrink.not_supported[0]
    assert set(topics.existing_partitions(s).values()) == {5}

    # Config drift is overwritten with the spec's retention.
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
    )

    admin = AdminClient(kafka_service.client_config("admin"))
    book = s.kafka.topics.book
    drift = ConfigResource(
        ConfigResource.Type.TOPIC,
        book,
        incremental_configs=[
            ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for future in admin.incremental_alter_configs([drift]).values():
        future.result(timeout=10)
    resource = ConfigResource(ConfigResource.Type.TOPIC, book)

    def retention() -> str:
        configs = admin.describe_configs([resource])[resource].result(timeout=10)
        return str(configs["retention.ms"].value)

    assert read_until(retention, "1000") == "1000"
    topics.ensure(s, 5)
    assert read_until(retention, str(2 * 3600 * 1000)) == str(2 * 3600 * 1000)

    assert sorted(topics.delete(s)) == sorted(topics.topic_names(s))
    assert settled(s, {}) == {}
