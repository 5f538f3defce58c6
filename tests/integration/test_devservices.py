"""A dev service that cannot start fails with its own log, never with a silent timeout."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from quantcore.devservices.kafka import KafkaBroker
from quantcore.devservices.ports import free_port, is_listening
from quantcore.devservices.process import ServiceError
from quantcore.devservices.redis import RedisServer

pytestmark = pytest.mark.integration


def test_broken_kafka_config_fails_with_the_log_tail(tmp_path: Path) -> None:
    # The controller must be reachable; a listener name nobody maps is rejected at boot.
    broker = KafkaBroker(
        tmp_path, extra_properties={"controller.listener.names": "NOSUCH"}, start_timeout=60
    )
    with pytest.raises(ServiceError) as failure:
        broker.start()
    message = str(failure.value)
    assert "kafka" in message
    assert "controller.listener.names" in message  # Kafka's own complaint


def test_kafka_on_a_taken_port_fails_with_the_log_tail(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        broker = KafkaBroker(tmp_path, port=port, start_timeout=90)
        with pytest.raises(ServiceError) as failure:
            broker.start()
    message = str(failure.value)
    assert "kafka exited with code" in message
    assert str(tmp_path / "kafka.log") in message
    assert "Address already in use" in message  # from the broker's log tail


def test_broken_redis_config_fails_with_the_log_tail(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, extra_config={"maxmemory-policy": "no-such-policy"})
    with pytest.raises(ServiceError) as failure:
        server.start()
    message = str(failure.value)
    assert "redis exited with code" in message
    assert "no-such-policy" in message


@pytest.mark.parametrize("insecure", [False, True], ids=["tls-and-acl", "insecure"])
def test_redis_round_trip_and_stop_frees_the_port(tmp_path: Path, insecure: bool) -> None:
    import redis

    port = free_port()
    server = RedisServer(tmp_path, port=port, insecure=insecure)
    with server as url:
        assert server.address == f"{'redis' if insecure else 'rediss'}://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url, decode_responses=True)
        client.set("k", "v")
        assert client.get("k") == "v"
        client.close()
    assert not is_listening(port)


def test_a_secured_redis_keeps_its_users_across_a_restart(tmp_path: Path) -> None:
    import redis

    server = RedisServer(tmp_path)
    server.start()
    try:
        before = server.auth("serve")
        server.stop()
        server.start()
        assert server.auth("serve") == before  # same password, same CA
        client = redis.Redis.from_url(server.url_for("serve"))
        assert client.ping()
        client.close()
    finally:
        server.stop()
