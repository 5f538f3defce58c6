"""The pure planner: what a MarketFeed becomes, and what a reshard touches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from quantcore.operator import planner
from quantcore.operator.api import MarketFeed, MarketFeedSpec
from quantcore.operator.planner import plan, sample_feed
from quantcore.routing import CONFIGMAP_KEY, RoutingTable

SYMBOLS = [f"C{i:03d}USDT" for i in range(120)]
EXAMPLES = sorted(Path(__file__).parents[2].glob("examples/marketfeed*.yaml"))


def by_name(objects: Any) -> dict[str, dict[str, Any]]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects}


def pods(objects: Any) -> list[dict[str, Any]]:
    out = []
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet"):
            out.append(o["spec"]["template"]["spec"])
    return out


def test_every_pod_is_restricted() -> None:
    p = plan(sample_feed(), None, SYMBOLS[:30])
    for pod in pods(p.objects):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["readOnlyRootFilesystem"] is True
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])
    spark = by_name(p.objects)["SparkApplication/demo-stream"]["spec"]
    for role in ("driver", "executor"):
        assert spark[role]["securityContext"]["readOnlyRootFilesystem"] is True
        assert spark[role]["podSecurityContext"]["runAsNonRoot"] is True


def test_reshard_touches_only_changed_shards_and_never_the_stream_job() -> None:
    feed = sample_feed(sharding={"symbolsPerShard": 10})
    first = plan(feed, None, SYMBOLS[:30])
    second = plan(feed, first.table, SYMBOLS[:100])
    a, b = by_name(first.objects), by_name(second.objects)
    assert second.changed_shards == frozenset(range(3, 10))
    for shard in range(3):
        name = planner.shard_configmap_name("demo", shard)
        assert a[f"ConfigMap/{name}"] == b[f"ConfigMap/{name}"]
    for shard in range(10):  # the Deployments never depend on the symbols
        name = f"Deployment/{planner.shard_deployment_name('demo', shard)}"
        if name in a:
            assert a[name] == b[name]
    assert a["SparkApplication/demo-stream"] == b["SparkApplication/demo-stream"]
    assert "symbols" not in str(b["SparkApplication/demo-stream"]["spec"]).lower()
    # Shrinking drains shards; their objects drop out of the plan (the applier prunes them).
    third = plan(feed, second.table, SYMBOLS[:20])
    c = by_name(third.objects)
    assert third.table.shards == 2
    assert "Deployment/demo-feed-2" not in c
    assert third.table.partitions == second.table.partitions


def test_shard_file_is_a_table_the_feed_can_read() -> None:
    feed = sample_feed(sharding={"symbolsPerShard": 4})
    p = plan(feed, None, SYMBOLS[:10])
    cm = by_name(p.objects)["ConfigMap/demo-shard-1"]
    table = RoutingTable.from_json(cm["data"][CONFIGMAP_KEY])
    assert table.shard_symbols(1) == p.table.shard_symbols(1)
    for s in table.symbols:
        assert table.partition_of(s) == p.table.partition_of(s)
    deployment = by_name(p.objects)["Deployment/demo-feed-1"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:5] == ["feed", "--routing", "/etc/quantcore/routing/routing.json", "--shard", "1"]


def test_spark_has_a_task_slot_per_input_partition() -> None:
    feed = sample_feed(
        kafka={"bootstrap": "k:9092", "partitions": 12},
        spark={"image": "spark:x", "executor": {"cores": 4}},
    )
    p = plan(feed, None, SYMBOLS[:5])
    ex = by_name(p.objects)["SparkApplication/demo-stream"]["spec"]["executor"]
    assert ex["instances"] * ex["cores"] >= 12 * 2  # book + trades
    # Partitions follow the topics when they already have more.
    grown = plan(feed, None, SYMBOLS[:5], min_partitions=16)
    assert grown.table.partitions == 16


def test_autoscaling_leaves_replicas_to_the_hpa() -> None:
    scaled = by_name(plan(sample_feed(serving={"autoscaling": {}}), None, SYMBOLS[:3]).objects)
    assert "replicas" not in scaled["Deployment/demo-serve"]["spec"]
    assert scaled["HorizontalPodAutoscaler/demo-serve"]["spec"]["minReplicas"] == 2
    fixed = by_name(plan(sample_feed(serving={"replicas": 3}), None, SYMBOLS[:3]).objects)
    assert fixed["Deployment/demo-serve"]["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler/demo-serve" not in fixed


def test_external_redis_creates_no_redis() -> None:
    objs = by_name(
        plan(
            sample_feed(redis={"mode": "external", "url": "redis://r:6379/0"}), None, SYMBOLS[:3]
        ).objects
    )
    assert not any(k.startswith("StatefulSet/") for k in objs)
    args = objs["Deployment/demo-serve"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["serve", "--redis", "redis://r:6379/0", "--port", "50051"]


def test_redis_memory_grows_with_symbols_and_levels_in_doublings() -> None:
    assert planner.redis_memory_mib(100_000, 20) > planner.redis_memory_mib(100, 20)
    assert planner.redis_memory_mib(50_000, 20) > planner.redis_memory_mib(50_000, 5)
    # A 30 -> 100 reshard does not resize (and so does not restart) Redis.
    assert planner.redis_memory_mib(30, 20) == planner.redis_memory_mib(100, 20)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid_specs(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    spec = MarketFeedSpec.model_validate(doc["spec"])
    feed = MarketFeed(
        name=doc["metadata"]["name"], namespace="ns", uid="u", generation=1, spec=spec
    )
    p = plan(feed, None, list(spec.symbols or SYMBOLS[: spec.universe.top if spec.universe else 1]))
    assert p.table.symbols


def test_stream_job_reads_the_topics_the_shards_write() -> None:
    feed = sample_feed(
        kafka={"bootstrap": "k:9092", "topics": {"book": "acme.book", "trades": "acme.trades"}}
    )
    args = by_name(plan(feed, None, SYMBOLS[:3]).objects)["SparkApplication/demo-stream"]["spec"][
        "arguments"
    ]
    flags = dict(zip(args[1::2], args[2::2], strict=True))
    assert flags["--book-topic"] == "acme.book"
    assert flags["--trades-topic"] == "acme.trades"
    assert flags["--max-levels"] == "20"


def test_a_handover_step_decides_the_shard_configmaps_and_keeps_a_draining_shard() -> None:
    import json

    from quantcore.operator import handover
    from quantcore.operator.planner import sample_feed, shard_table
    from quantcore.routing import CONFIGMAP_KEY, rebalance

    feed = sample_feed(sharding={"symbolsPerShard": 2})
    before = rebalance(None, ["BTCUSDT", "ETHUSDT"], 1, 4)  # two shards
    final = rebalance(before, ["BTCUSDT", "ETHUSDT"], 2, 4)  # one shard takes both
    applied = {i: shard_table(before, i) for i in range(before.shards)}
    moving = next(s for s in before.symbols if before.route(s).shard == 1)
    step = handover.step(final, applied, live={}, since={}, now=handover.NOW)
    p = plan(feed, before, ["BTCUSDT", "ETHUSDT"], shard_tables=step.tables)
    assert p.table.shards == 1
    by_name = {f"{o['kind']}/{o['metadata']['name']}": o for o in p.objects}
    # The old shard 1 still runs and still holds its symbol; shard 0 already has both.
    assert "Deployment/demo-feed-1" in by_name
    held = json.loads(by_name["ConfigMap/demo-shard-1"]["data"][CONFIGMAP_KEY])
    assert list(held["routes"]) == [moving]
    gained = json.loads(by_name["ConfigMap/demo-shard-0"]["data"][CONFIGMAP_KEY])
    assert sorted(gained["routes"]) == ["BTCUSDT", "ETHUSDT"]
    # The shards' Service names not-ready pods too: the operator asks each for /live.
    assert by_name["Service/demo-feed"]["spec"]["publishNotReadyAddresses"] is True
