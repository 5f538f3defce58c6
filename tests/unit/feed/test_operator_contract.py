"""The feed shard reads exactly what the operator's planner gives it: args, env and shard file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from quantcore.feed.commands import feed as feed_command
from quantcore.feed.shard import ShardConfig, assignment
from quantcore.kafkaauth import KafkaAuth
from quantcore.operator import planner
from quantcore.operator.planner import plan, sample_feed
from quantcore.routing import CONFIGMAP_KEY, RoutingTable

SYMBOLS = [f"C{i:03d}USDT" for i in range(10)]


def _objects(p: planner.Plan) -> dict[str, dict[str, Any]]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in p.objects}


def _parse(argv: list[str], env: dict[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="quantcore feed")
    feed_command.add_arguments(parser, environ=env)
    return parser.parse_args(argv)


def _shard_from_plan(
    feed: Any, shard: int, tmp_path: Path, pod: bool = True
) -> tuple[ShardConfig, RoutingTable, planner.Plan]:
    """What shard `shard`'s container would run with: its args, its env, its mounted file."""
    p = plan(feed, None, SYMBOLS)
    objects = _objects(p)
    container = objects[f"Deployment/{planner.shard_deployment_name('demo', shard)}"]["spec"][
        "template"
    ]["spec"]["containers"][0]
    # The kubelet fills the downward API's fields (the log context) from the pod itself, and
    # the Kafka credentials from the feed user's Secret.
    pod_fields = {"metadata.namespace": feed.namespace, "metadata.name": f"demo-feed-{shard}-x"}

    def value(e: dict[str, Any]) -> str:
        if "value" in e:
            return str(e["value"])
        source = e["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            return SECRETS[ref["name"]][ref["key"]]
        return pod_fields[source["fieldRef"]["fieldPath"]]

    env = {e["name"]: value(e) for e in container["env"]}
    if pod:
        env["KUBERNETES_SERVICE_HOST"] = "10.0.0.1"  # the kubelet sets this in every pod
    assert container["command"] == ["quantcore"]
    assert container["args"][0] == "feed"
    args = _parse(container["args"][1:], env)
    # The CA Secret's ca.crt alone is mounted where QUANTCORE_KAFKA_CA_FILE points.
    volumes = {v["name"]: v for v in objects[
        f"Deployment/{planner.shard_deployment_name('demo', shard)}"
    ]["spec"]["template"]["spec"]["volumes"]}  # fmt: skip
    ca = next(m for m in container["volumeMounts"] if m["name"] == "kafka-ca")
    assert ca["mountPath"] == planner.KAFKA_CA_DIR
    assert ca["readOnly"] is True
    assert volumes["kafka-ca"]["secret"] == {
        "secretName": "demo-kafka-ca",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    # The ConfigMap is mounted at ROUTING_DIR; the file the shard reads is its CONFIGMAP_KEY.
    mount = next(m for m in container["volumeMounts"] if m["name"] == "routing")
    assert Path(mount["mountPath"]) / CONFIGMAP_KEY == args.routing
    cm = objects[f"ConfigMap/{planner.shard_configmap_name('demo', shard)}"]
    local = tmp_path / CONFIGMAP_KEY
    local.write_text(cm["data"][CONFIGMAP_KEY])
    table = RoutingTable.from_json(local.read_text())  # what Shard._watch_routing does
    return feed_command.shard_config(args, env), table, p


# What the kubelet would read from the feed's Secrets (sample_feed names them).
SECRETS = {
    "demo-kafka-feed": {"username": "feed", "password": "feed-password"},
    "demo-kafka-stream": {"username": "stream", "password": "stream-password"},
}

# The flags `quantcore feed` cannot run without; the values do not matter to parsing.
REQUIRED_ARGS = [
    "--routing",
    "r.json",
    "--shard",
    "0",
    "--kafka",
    "k",
    "--ws-url",
    "w",
    "--rest-url",
    "r",
]


def test_planner_defaults_become_the_shard_configuration(tmp_path: Path) -> None:
    feed = sample_feed(sharding={"symbolsPerShard": 4})
    config, table, p = _shard_from_plan(feed, 1, tmp_path)
    assert config.shard == 1
    assert config.bootstrap == "kafka:9092"
    # The feed user alone, over SASL_SSL, trusting the CA Secret's ca.crt where it is mounted.
    assert config.kafka_auth == KafkaAuth.scram(
        "feed", "feed-password", f"{planner.KAFKA_CA_DIR}/ca.crt"
    )
    assert config.levels == 20
    assert config.streams.diff_speed == "100ms"
    assert config.streams.trades is True
    assert config.streams.book_ticker is False  # the CRD's default
    assert config.streams.streams("C004USDT") == ["c004usdt@depth@100ms", "c004usdt@trade"]
    # The shard file holds only shard 1's routes, with their global partitions.
    served = assignment(table, config.shard)
    assert served == {s: p.table.partition_of(s) for s in p.table.shard_symbols(1)}
    assert len(served) == 3
    assert table.version == 0
    assert table.shards == 2
    # The metrics/health endpoint listens where the Deployment's port and Service point.
    ports = {
        port["name"]: port["containerPort"]
        for port in _objects(p)["Deployment/demo-feed-1"]["spec"]["template"]["spec"]["containers"][
            0
        ]["ports"]
    }
    assert config.metrics_port == ports["metrics"] == planner.METRICS_PORT
    assert config.metrics_host == "0.0.0.0"


def test_non_default_spec_reaches_every_setting(tmp_path: Path) -> None:
    feed = sample_feed(
        sharding={"symbolsPerShard": 3},
        streams={"depth": {"levels": 10, "intervalMs": 1000}, "trades": False, "bookTicker": True},
        kafka={
            "bootstrap": "broker-a:9092,broker-b:9092",
            "topics": {"raw": "x.raw", "book": "x.book", "trades": "x.tr", "quarantine": "x.q"},
        },
    )
    for shard in range(4):
        config, table, p = _shard_from_plan(feed, shard, tmp_path)
        assert config.bootstrap == "broker-a:9092,broker-b:9092"
        assert config.levels == 10
        assert config.streams.diff_speed == "1000ms"
        assert config.streams.trades is False
        assert config.streams.book_ticker is True
        assert (
            config.topics.raw,
            config.topics.book,
            config.topics.trades,
            config.topics.quarantine,
        ) == ("x.raw", "x.book", "x.tr", "x.q")
        served = assignment(table, shard)
        assert served == {s: p.table.partition_of(s) for s in p.table.shard_symbols(shard)}
        for symbol in served:
            low = symbol.lower()
            assert config.streams.streams(symbol) == [f"{low}@depth", f"{low}@bookTicker"]
    # Together the shards serve every symbol once.
    everyone: list[str] = []
    for shard in range(p.table.shards):
        _, table, _ = _shard_from_plan(feed, shard, tmp_path)
        everyone.extend(assignment(table, shard))
    assert sorted(everyone) == SYMBOLS


def test_flags_win_over_the_environment() -> None:
    env = {
        "QUANTCORE_DEPTH_LEVELS": "10",
        "QUANTCORE_DEPTH_INTERVAL_MS": "1000",
        "QUANTCORE_TRADES": "false",
        "QUANTCORE_BOOK_TICKER": "true",
        "QUANTCORE_TOPIC_BOOK": "env.book",
    }
    base = REQUIRED_ARGS
    argv = [*base, "--depth-levels", "5", "--diff-speed", "100ms", "--trades", "--no-book-ticker"]
    config = feed_command.shard_config(_parse(argv, env))
    assert config.levels == 5
    assert config.streams.diff_speed == "100ms"
    assert config.streams.trades is True
    assert config.streams.book_ticker is False
    assert config.topics.book == "env.book"
    prefixed = feed_command.shard_config(_parse([*base, "--topic-prefix", "p"], env))
    assert prefixed.topics.book == "p.book"
    # Outside a pod with nothing set: no metrics server unless asked, loopback only.
    local = feed_command.shard_config(_parse(base, {}))
    assert local.metrics_port is None
    assert local.metrics_host == "127.0.0.1"
    assert local.streams.book_ticker is True
    assert local.levels == 20


def test_bad_environment_values_are_clear_errors() -> None:
    base = REQUIRED_ARGS
    with pytest.raises(SystemExit):
        _parse(base, {"QUANTCORE_DEPTH_INTERVAL_MS": "250"})
    with pytest.raises(SystemExit):
        _parse(base, {"QUANTCORE_DEPTH_LEVELS": "many"})
    with pytest.raises(ValueError, match="QUANTCORE_TRADES"):
        feed_command.shard_config(_parse(base, {"QUANTCORE_TRADES": "maybe"}))
