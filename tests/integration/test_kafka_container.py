"""The test ground's broker as its image runs it (images/kafka-entrypoint.sh with the container's
server.properties, quantcore.devservices.kafka.container_properties), run on this machine with
its ports and paths moved: the users are formatted in from the mounted password files, both
client listeners are SASL_SSL with ACLs enforced, the readiness probe answers on the loopback
listener, and no password reaches the log."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from quantcore import kafkaacl
from quantcore.devservices import kafka as devkafka
from quantcore.devservices.ports import free_port
from quantcore.events import Topics

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Broker:
    security: devkafka.KafkaSecurity
    client: str  # the CLIENT listener (in a cluster: the Service's name)
    host: str  # the HOST listener (in a cluster: the host relay)
    probe_port: int
    log: Path


def _moved(properties: str, ports: dict[int, int], paths: dict[str, str]) -> str:
    for container, local in ports.items():
        properties = properties.replace(f":{container}", f":{local}")
    for container_path, local_path in paths.items():
        properties = properties.replace(container_path, local_path)
    return properties


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    work = tmp_path_factory.mktemp("kafka-container")
    security = devkafka.create_security(work / "security", devkafka.ALL_USERS, ["127.0.0.1"])
    users = work / "users"  # what the users Secret mounts: one file per user
    users.mkdir()
    for user, password in security.passwords.items():
        (users / user).write_text(password)
    container_ports = [
        devkafka.CONTAINER_PORT,
        devkafka.CONTAINER_CONTROLLER_PORT,
        9094,
        devkafka.CONTAINER_PROBE_PORT,
    ]
    ports = {port: free_port() for port in container_ports}
    properties = devkafka.container_properties(
        f"127.0.0.1:{devkafka.CONTAINER_PORT}",
        {"HOST": (9094, "127.0.0.1:9094")},
        admin_password=security.passwords["admin"],
    )
    config = work / "server.properties"
    config.write_text(
        _moved(
            properties,
            ports,
            {
                str(devkafka.CONTAINER_TLS_DIR / "keystore.pem"): str(security.keystore),
                str(devkafka.CONTAINER_TLS_DIR / "ca.crt"): str(security.tls.ca),
                str(devkafka.CONTAINER_LOG_DIR): str(work / "data"),
            },
        )
    )
    env = {
        **os.environ,
        "KAFKA_CONFIG": str(config),
        "KAFKA_HEAP_OPTS": devkafka.HEAP,
        "KAFKA_LOG4J": str(devkafka.log4j_config(work, "INFO")),
        "KAFKA_CLASSPATH": devkafka.classpath(devkafka.kafka_jars()),
        "KAFKA_USERS_DIR": str(users),
        "TMPDIR": str(work),
    }
    log = work / "kafka.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["sh", str(ROOT / "images" / "kafka-entrypoint.sh")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    client = f"127.0.0.1:{ports[devkafka.CONTAINER_PORT]}"
    host = f"127.0.0.1:{ports[9094]}"
    try:
        deadline = time.monotonic() + 120
        while not devkafka.broker_answers(host, security.auth("admin")):
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield Broker(security, client, host, ports[devkafka.CONTAINER_PROBE_PORT], log)
    finally:
        process.terminate()
        process.wait(60)


def _delivery(config: dict[str, object], topic: str) -> KafkaError | None:
    outcome: list[KafkaError | None] = []
    producer = Producer(
        {
            **config,
            "log_level": 0,
            "message.timeout.ms": 10_000,
            "on_delivery": lambda error, message: outcome.append(error),
        }
    )
    producer.produce(topic, b"x", b"BTCUSDT")
    producer.flush(30)
    return outcome[0]


def test_its_users_are_formatted_in_and_its_acls_enforced_on_both_listeners(
    broker: Broker,
) -> None:
    topics = Topics.with_prefix(f"ctr-{uuid.uuid4().hex[:8]}")
    admin = broker.security.auth("admin")
    devkafka.create_acls(broker.host, admin, kafkaacl.acls(topics))
    operator = {
        **broker.security.auth("operator").client_config(),
        "bootstrap.servers": broker.host,
    }

    client = AdminClient(operator)  # kept: a collected client cancels its futures
    client.create_topics([NewTopic(topics.book, 1, 1)])[topics.book].result(timeout=30)
    for bootstrap in (broker.client, broker.host):
        feed = {**broker.security.auth("feed").client_config(), "bootstrap.servers": bootstrap}
        assert _delivery(feed, topics.book) is None, bootstrap
        refused = _delivery(feed, topics.signals)
        assert refused is not None
        assert refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        plaintext = _delivery({"bootstrap.servers": bootstrap}, topics.book)
        assert plaintext is not None
        assert plaintext.code() == KafkaError._MSG_TIMED_OUT


def test_the_readiness_probe_answers_on_the_loopback_listener(broker: Broker) -> None:
    probe = ROOT / "images" / "kafka-probe.sh"
    assert subprocess.run(["bash", str(probe), str(broker.probe_port)], timeout=30).returncode == 0
    # The client port speaks TLS first: the same request gets no Kafka answer there.
    client_port = broker.client.rpartition(":")[2]
    assert subprocess.run(["bash", str(probe), client_port], timeout=30).returncode != 0


def test_no_password_reaches_the_log_and_the_argument_file_is_gone(broker: Broker) -> None:
    text = broker.log.read_text()
    for password in broker.security.passwords.values():
        assert password not in text
    assert not list(broker.log.parent.glob("kafka-format.*"))
