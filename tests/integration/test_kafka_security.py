"""Kafka's security against a real broker: SASL_SSL with SCRAM and ACLs (quantcore.kafkaacl).
Every refusal is asserted with the error the broker gives; the allowed flows work."""

from __future__ import annotations

import socket
import ssl
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from quantcore import kafkaacl
from quantcore.devservices.kafka import (
    TOOLS,
    KafkaBroker,
    java_command,
    kafka_jars,
    log4j_config,
    write_client_properties,
)
from quantcore.events import Topics
from quantcore.kafkaauth import KafkaAuth
from tests.fixtures.cluster import eventually


@pytest.fixture(scope="module")
def feed_topics(kafka_service: KafkaBroker) -> Topics:
    """A feed's topics of this module's own, existing, with their users' ACLs."""
    topics = Topics.with_prefix(f"sec-{uuid.uuid4().hex[:8]}")
    admin = AdminClient({**kafka_service.client_config("admin")})
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in topics.all()]).values():
        future.result(timeout=30)
    kafka_service.grant(topics)
    return topics


def _code(error: KafkaError | None) -> int | None:
    return None if error is None else error.code()


def _produce(
    config: dict[str, Any],
    topic: str,
    timeout: float = 20.0,
    errors: list[KafkaError] | None = None,
) -> KafkaError | None:
    """Produce one record and return its delivery error (None: delivered); the client's own
    errors (authentication, transport) are appended to `errors`."""
    outcome: list[KafkaError | None] = []
    producer = Producer(
        {
            **config,
            "message.timeout.ms": int(timeout * 1000),
            "log_level": 0,
            "on_delivery": lambda err, msg: outcome.append(err),
            "error_cb": (errors if errors is not None else []).append,
        }
    )
    producer.produce(topic, b"forged", b"BTCUSDT")
    producer.flush(timeout + 10)
    assert outcome, "no delivery report"
    return outcome[0]


def test_a_producer_without_credentials_is_refused(
    kafka_service: KafkaBroker, feed_topics: Topics
) -> None:
    # TLS without SASL: the broker closes the connection before any request.
    config = {
        "bootstrap.servers": kafka_service.bootstrap,
        "security.protocol": "ssl",
        "ssl.ca.location": str(kafka_service.auth("feed").ca_file),
    }
    error = _produce(config, feed_topics.book, timeout=5)
    assert _code(error) == KafkaError._MSG_TIMED_OUT


def test_a_wrong_password_fails_authentication(
    kafka_service: KafkaBroker, feed_topics: Topics
) -> None:
    feed = kafka_service.auth("feed")
    wrong = KafkaAuth.scram("feed", "not-the-password", feed.ca_file)
    config = {**wrong.client_config(), "bootstrap.servers": kafka_service.bootstrap}
    errors: list[KafkaError] = []
    error = _produce(config, feed_topics.book, timeout=10, errors=errors)
    assert _code(error) == KafkaError._MSG_TIMED_OUT
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    assert any("Authentication failed" in e.str() for e in errors), errors


def test_plaintext_to_the_sasl_ssl_port_gets_no_answer(
    kafka_service: KafkaBroker, feed_topics: Topics
) -> None:
    config = {"bootstrap.servers": kafka_service.bootstrap, "security.protocol": "plaintext"}
    error = _produce(config, feed_topics.book, timeout=5)
    assert _code(error) == KafkaError._MSG_TIMED_OUT


def test_the_port_speaks_tls_with_a_certificate_from_the_brokers_ca(
    kafka_service: KafkaBroker,
) -> None:
    context = ssl.create_default_context(cafile=kafka_service.auth("feed").ca_file)
    host, _, port = kafka_service.bootstrap.rpartition(":")
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    untrusted = ssl.create_default_context()  # the system's CAs do not know it
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        untrusted.wrap_socket(raw, server_hostname=host)


def test_the_feed_user_writes_its_topics_and_nothing_else(
    kafka_service: KafkaBroker, feed_topics: Topics
) -> None:
    config = kafka_service.client_config("feed") | {"enable.idempotence": True}
    for topic in feed_topics.by_kind().values():
        assert _produce(config, topic) is None, topic
    error = _produce(config, feed_topics.signals)
    assert _code(error) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    other = Topics.with_prefix(f"other-{uuid.uuid4().hex[:8]}")
    error = _produce(config, other.book)
    assert _code(error) == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_the_stream_user_cannot_write_an_input_topic(
    kafka_service: KafkaBroker, feed_topics: Topics
) -> None:
    config = kafka_service.client_config("stream")
    error = _produce(config, feed_topics.book)
    assert _code(error) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _produce(config, feed_topics.signals) is None


def _create(config: dict[str, Any], topic: str) -> None:
    admin = AdminClient({**config, "log_level": 0})
    admin.create_topics([NewTopic(topic, 1, 1)], request_timeout=20)[topic].result(timeout=30)


def test_the_feed_user_cannot_create_a_topic(
    kafka_service: KafkaBroker, feed_topics: Topics
) -> None:
    with pytest.raises(KafkaException) as refused:
        _create(kafka_service.client_config("feed"), f"{feed_topics.book}.extra")
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_the_operator_manages_its_feeds_topics_only(
    kafka_service: KafkaBroker, feed_topics: Topics
) -> None:
    config = kafka_service.client_config("operator")
    prefix = feed_topics.book.rsplit(".", 1)[0]
    _create(config, f"{prefix}.created-by-operator")
    with pytest.raises(KafkaException) as refused:
        _create(config, f"elsewhere-{uuid.uuid4().hex[:8]}.book")
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # It cannot write records either: managing topics is not producing to them.
    error = _produce(config, feed_topics.book)
    assert _code(error) == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_the_printed_kafka_acls_commands_grant_what_the_broker_needs(
    kafka_service: KafkaBroker, tmp_path: Path
) -> None:
    """What `python -m quantcore.kafkaacl` prints for a broker run by someone else (MSK), run
    with Kafka's own tool: afterwards the feed user writes its topics and nothing else."""
    topics = Topics.with_prefix(f"tool-{uuid.uuid4().hex[:8]}")
    admin = AdminClient(kafka_service.client_config("admin"))
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in topics.all()]).values():
        future.result(timeout=30)
    config = kafka_service.client_config("feed")
    assert _code(_produce(config, topics.book, timeout=10)) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    properties = write_client_properties(tmp_path / "admin.properties", kafka_service.auth("admin"))
    java = java_command(kafka_jars(), TOOLS["kafka-acls"], log4j_config(tmp_path, "WARN"))
    feed_rules = [rule for rule in kafkaacl.acls(topics) if rule.user == kafkaacl.FEED]
    for arguments in kafkaacl.kafka_acls_arguments(feed_rules):
        connection = ["--bootstrap-server", kafka_service.bootstrap]
        connection += ["--command-config", str(properties)]
        done = subprocess.run(
            [*java, *connection, *arguments], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]

    def allowed() -> bool:
        return _produce(config, topics.book, timeout=10) is None

    eventually(allowed, "the feed user allowed by the tool's ACLs", timeout=60)
    assert _code(_produce(config, topics.signals)) == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_the_stream_job_says_what_is_missing_when_its_signals_topic_is_absent(
    kafka_service: KafkaBroker,
) -> None:
    from quantcore.stream.relay import RelayConfig, ensure_topic

    topics = Topics.with_prefix(f"absent-{uuid.uuid4().hex[:8]}")
    kafka_service.grant(topics)
    config = RelayConfig(
        kafka_service.bootstrap, "rediss://unused:6379/0", topics.signals,
        kafka_auth=kafka_service.auth("stream"),
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="may not create it"):
        ensure_topic(config, like=topics.book)


def test_the_insecure_broker_is_plaintext_without_users(tmp_path: Path) -> None:
    """`quantcore up --insecure`'s broker: the explicit opt-out, PLAINTEXT and open."""
    with KafkaBroker(tmp_path / "kafka", insecure=True) as bootstrap:
        assert _open_to_anyone(bootstrap)


def _open_to_anyone(bootstrap: str) -> bool:
    config = {"bootstrap.servers": bootstrap, "security.protocol": "plaintext"}
    return _produce(config, f"open-{uuid.uuid4().hex[:8]}") is None
