"""The MarketFeed operator as a real process against a real kube-apiserver, controller-manager
and Kafka: children created and accepted by the real third-party CRDs, resharding that leaves
unchanged shards alone, restart after a kill, garbage collection and the topic policy.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantcore.devservices.kafka import KafkaBroker
from quantcore.operator import planner, topics
from quantcore.operator.api import MarketFeedSpec
from quantcore.operator.applier import Kube
from tests.cluster.marketfeeds import (
    CRD,
    FEED,
    SYMBOLS,
    OperatorProcess,
    apply,
    children,
    converged,
    expected_names,
    feed_object,
    feed_topics,
    kubectl,
    manifest,
    routing,
    wait_for,
)

pytestmark = pytest.mark.cluster


@pytest.fixture
def operator(
    crd_installed: Path, namespace: str, kafka_service: KafkaBroker, tmp_path: Path
) -> Iterator[OperatorProcess]:
    # The feed's users' ACLs, as a Kafka administrator grants them for a new MarketFeed.
    kafka_service.grant(feed_topics(namespace))
    op = OperatorProcess(
        crd_installed,
        namespace,
        tmp_path / "operator.log",
        kafka_auth=kafka_service.auth("operator"),
    )
    op.start()
    yield op
    op.stop(timeout=10)
    sys.stderr.write(f"--- operator log tail ---\n{op.tail()}\n")


def test_apply_creates_every_child_and_the_topics(
    kube: Kube,
    operator: OperatorProcess,
    namespace: str,
    kafka_bootstrap: str,
    kafka_service: KafkaBroker,
    crd_installed: Path,
) -> None:
    doc = manifest(namespace, kafka_bootstrap, SYMBOLS[:30])
    apply(crd_installed, doc)
    obj = wait_for("status of 30 symbols", converged(kube, namespace, 30))
    table = routing(kube, namespace)
    assert sorted(table.symbols) == SYMBOLS[:30]
    found = children(kube, namespace)
    want = expected_names(doc, namespace, table)
    assert set(found) == want
    assert {
        "SparkApplication/mf-stream",
        "ServiceMonitor/mf",
        "HorizontalPodAutoscaler/mf-serve",
    } <= want
    # The serving pods mount their Secrets read-only (their own TLS and tokens, and the
    # managed Redis's CA) and are told to use them; the kubelet probes readiness on the
    # plaintext health-only port.
    serve = found[f"Deployment/{planner.serve_name(FEED)}"]["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in serve["volumes"] if "secret" in v}
    assert secrets == {
        "tls": "mf-serving-tls",
        "tokens": "mf-serving-tokens",
        "redis-ca": f"{FEED}-redis-tls",
    }
    container = serve["containers"][0]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert all(mounts[name]["readOnly"] for name in secrets)
    args = container["args"]
    assert args[args.index("--tls-dir") + 1] == mounts["tls"]["mountPath"]
    assert args[args.index("--tls-client-auth") + 1] == "require"
    assert args[args.index("--tokens") + 1].startswith(mounts["tokens"]["mountPath"])
    # (The API server fills in the probe's defaults: service "", periods, thresholds.)
    assert container["readinessProbe"]["grpc"] == {"port": 50052, "service": ""}
    uid = obj["metadata"]["uid"]
    for name, child in found.items():
        refs = child["metadata"]["ownerReferences"]
        assert [(r["uid"], r["controller"]) for r in refs] == [(uid, True)], name
    # Everything went through the API server's strict validation (fieldValidation=Strict) against
    # the real third-party CRDs; a server-side dry run of the stored objects agrees.
    for name in ("SparkApplication/mf-stream", "ServiceMonitor/mf"):
        child = found[name]
        clean = {k: child[k] for k in ("apiVersion", "kind", "spec")}
        clean["metadata"] = {"name": child["metadata"]["name"], "namespace": namespace}
        kubectl(
            crd_installed,
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "--server-side",
            "--field-manager=dry",
            "-f",
            "-",
            stdin=json.dumps(clean),
        )
    # Status and printer columns.
    st = obj["status"]
    assert (st["shards"], st["partitions"]) == (3, 8)
    assert st["routing"]["shardLoads"] == [10, 10, 10]
    ready = {c["type"]: c for c in st["conditions"]}["Ready"]
    assert ready["status"] == "False"  # no kubelet: pods stay Pending
    assert ready["reason"] == "WorkloadsNotReady"
    row = kubectl(
        crd_installed, "get", "marketfeed", FEED, "-n", namespace, "--no-headers"
    ).stdout.split()
    assert row[:5] == [FEED, "False", "30", "3", "8"]
    # The topics exist in real Kafka with the table's partition count.
    spec = MarketFeedSpec.model_validate(doc["spec"])
    admin = kafka_service.auth("admin")
    assert topics.existing_partitions(spec, admin) == dict.fromkeys(topics.topic_names(spec), 8)


def test_reshard_30_100_20_touches_only_changed_shards(
    kube: Kube, operator: OperatorProcess, namespace: str, kafka_bootstrap: str, crd_installed: Path
) -> None:
    apply(crd_installed, manifest(namespace, kafka_bootstrap, SYMBOLS[:30]))
    wait_for("30 symbols", converged(kube, namespace, 30))
    before = children(kube, namespace)
    t30 = routing(kube, namespace)

    apply(crd_installed, manifest(namespace, kafka_bootstrap, SYMBOLS[:100]))
    obj = wait_for("100 symbols", converged(kube, namespace, 100))
    after = children(kube, namespace)
    t100 = routing(kube, namespace)
    assert (t100.shards, t100.partitions) == (10, 8)
    assert sorted(t100.symbols) == SYMBOLS[:100]
    for s in t30.symbols:
        assert t100.route(s) == t30.route(s)  # no kept symbol moved shard or partition
    unchanged = [f"ConfigMap/mf-shard-{i}" for i in range(3)] + [
        f"Deployment/mf-feed-{i}" for i in range(3)
    ]
    unchanged += ["SparkApplication/mf-stream", "StatefulSet/mf-redis", "Deployment/mf-serve"]
    for name in unchanged:
        assert written_version(after[name]) == written_version(before[name]), name
    assert {f"Deployment/mf-feed-{i}" for i in range(10)} <= set(after)
    assert obj["status"]["routing"]["shardLoads"] == [10] * 10

    apply(crd_installed, manifest(namespace, kafka_bootstrap, SYMBOLS[:20]))
    wait_for("20 symbols", converged(kube, namespace, 20))
    t20 = routing(kube, namespace)
    assert (t20.shards, t20.partitions) == (2, 8)  # partitions never shrink
    for s in t20.symbols:
        assert t20.partition_of(s) == t100.partition_of(s)

    def pruned() -> dict[str, dict[str, Any]] | None:
        found = children(kube, namespace)
        return found if "Deployment/mf-feed-2" not in found else None

    final = wait_for("drained shards pruned", pruned)
    feeds = sorted(n for n in final if n.startswith("Deployment/mf-feed-"))
    assert feeds == ["Deployment/mf-feed-0", "Deployment/mf-feed-1"]
    assert written_version(final["SparkApplication/mf-stream"]) == written_version(
        before["SparkApplication/mf-stream"]
    )


def written_version(obj: dict[str, Any]) -> str:
    """What changes when the operator writes `obj`'s spec: its generation where it has one.
    A Deployment's resourceVersion also moves when the controller-manager updates its status
    (CI once saw that happen between two snapshots); a ConfigMap has no generation, and
    nothing but the operator writes it."""
    meta = obj["metadata"]
    return str(meta.get("generation", meta["resourceVersion"]))


def test_operator_killed_mid_reconcile_converges_without_duplicates(
    kube: Kube, operator: OperatorProcess, namespace: str, kafka_bootstrap: str, crd_installed: Path
) -> None:
    apply(crd_installed, manifest(namespace, kafka_bootstrap, SYMBOLS[:100]))
    # Kill it as soon as the first child lands, i.e. in the middle of the first reconcile.
    wait_for(
        "the routing ConfigMap",
        lambda: kube.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/mf-routing"),
        timeout=60,
    )
    operator.kill()
    partial = children(kube, namespace)
    operator.start()
    obj = wait_for("convergence after restart", converged(kube, namespace, 100))
    found = children(kube, namespace)
    table = routing(kube, namespace)
    assert set(found) == expected_names(
        manifest(namespace, kafka_bootstrap, SYMBOLS[:100]), namespace, table
    )
    assert set(partial) <= set(found)
    assert table.version == 1  # the restart re-planned the same table, not a second one
    uid = obj["metadata"]["uid"]
    for name, child in found.items():
        assert [r["uid"] for r in child["metadata"]["ownerReferences"]] == [uid], name
    pods = kube.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments")
    assert len((pods or {})["items"]) == 11  # 10 feed shards + serving, no duplicates


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
def test_delete_collects_children_and_honours_topic_policy(
    kube: Kube,
    operator: OperatorProcess,
    namespace: str,
    kafka_bootstrap: str,
    kafka_service: KafkaBroker,
    crd_installed: Path,
    policy: str,
) -> None:
    admin = kafka_service.auth("admin")
    doc = manifest(namespace, kafka_bootstrap, SYMBOLS[:15], kafka={"deletionPolicy": policy})
    apply(crd_installed, doc)
    wait_for("15 symbols", converged(kube, namespace, 15))
    assert children(kube, namespace)
    kubectl(
        crd_installed, "delete", "marketfeed", FEED, "-n", namespace, "--wait=true", "--timeout=60s"
    )
    assert feed_object(kube, namespace) is None
    wait_for(
        "garbage collection of every child",
        lambda: not children(kube, namespace) or None,
        timeout=90,
    )
    spec = MarketFeedSpec.model_validate(doc["spec"])
    names = topics.topic_names(spec)
    if policy == "Retain":
        assert topics.existing_partitions(spec, admin) == dict.fromkeys(names, 8)
    else:
        wait_for(
            "topics deleted",
            lambda: topics.existing_partitions(spec, admin) == {} or None,
            timeout=30,
        )


# ---- the API server rejects what it should, saying what to fix -------------------------

INVALID: list[tuple[str, Callable[[dict[str, Any]], object], str]] = [
    ("no symbols nor universe", lambda s: s.pop("symbols"), "set exactly one of spec.symbols"),
    (
        "both symbols and universe",
        lambda s: s.update(universe={"quoteAsset": "USDT", "top": 5}),
        "set exactly one of spec.symbols",
    ),
    ("lower-case symbol", lambda s: s.update(symbols=["btcusdt"]), "spec.symbols[0]"),
    ("duplicate symbol", lambda s: s.update(symbols=["BTCUSDT", "BTCUSDT"]), "Duplicate value"),
    ("empty symbol list", lambda s: s.update(symbols=[]), "spec.symbols"),
    ("unknown exchange", lambda s: s.update(exchange="kraken"), 'supported values: "binance"'),
    (
        "bad depth levels",
        lambda s: s.update(streams={"depth": {"levels": 7}}),
        "spec.streams.depth.levels",
    ),
    (
        "zero symbols per shard",
        lambda s: s.update(sharding={"symbolsPerShard": 0}),
        "spec.sharding.symbolsPerShard",
    ),
    ("bad bootstrap", lambda s: s["kafka"].update(bootstrap="not a host"), "spec.kafka.bootstrap"),
    ("too many partitions", lambda s: s["kafka"].update(partitions=5000), "spec.kafka.partitions"),
    (
        "same topic twice",
        lambda s: s["kafka"].update(topics={"raw": "x", "book": "x"}),
        "five different names",
    ),
    (
        "bad deletion policy",
        lambda s: s["kafka"].update(deletionPolicy="Keep"),
        'supported values: "Retain", "Delete"',
    ),
    (
        "bad memory",
        lambda s: s["spark"].update(driver={"memory": "2GB"}),
        "spec.spark.driver.memory",
    ),
    ("bad trigger", lambda s: s["spark"].update(trigger="once"), "spec.spark.trigger"),
    (
        "zero cpu request",
        lambda s: s["spark"].update(executor={"requestCores": "0"}),
        "spec.spark.executor.requestCores",
    ),
    (
        "spark conf outside spark.",
        lambda s: s["spark"].update(sparkConf={"fs.s3a.endpoint": "x"}),
        "keys must start with 'spark.'",
    ),
    (
        "spark conf the operator sets",
        lambda s: s["spark"].update(sparkConf={"spark.executor.instances": "1"}),
        "the operator sets this key itself",
    ),
    (
        "node selector key",
        lambda s: s["spark"].update(nodeSelector={"bad key!": "spark"}),
        "keys must be Kubernetes label keys",
    ),
    (
        "toleration Exists with a value",
        lambda s: s["spark"].update(tolerations=[{"key": "k", "operator": "Exists", "value": "v"}]),
        "operator Exists takes no value",
    ),
    (
        "env with value and secret",
        lambda s: s["spark"].update(
            env=[
                {
                    "name": "A",
                    "value": "1",
                    "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                }
            ]
        ),
        "exactly one of value or valueFrom",
    ),
    (
        "env named SPARK_",
        lambda s: s["spark"].update(env=[{"name": "SPARK_HOME", "value": "/x"}]),
        "belong to Spark",
    ),
    (
        "too few task slots",
        lambda s: s["spark"].update(executor={"instances": 1, "cores": 1}),
        "task slot per input partition",
    ),
    (
        "external redis without url",
        lambda s: s.update(redis={"mode": "external"}),
        "redis.url is required",
    ),
    (
        "managed redis with url",
        lambda s: s.update(redis={"url": "redis://r:6379/0"}),
        "redis.url is required",
    ),
    (
        "external redis without credentials",
        lambda s: s.update(redis={"mode": "external", "url": "rediss://r:6379/0"}),
        "needs redis.credentialsSecretName",
    ),
    (
        "external redis over plaintext",
        lambda s: s.update(
            redis={"mode": "external", "url": "redis://r:6379/0", "credentialsSecretName": "u"}
        ),
        "must be rediss://",
    ),
    (
        "insecure redis with secrets",
        lambda s: s.update(redis={"insecure": True, "tlsSecretName": "t"}),
        "turns TLS and passwords off",
    ),
    (
        "env named QUANTCORE_REDIS_",
        lambda s: s["spark"].update(env=[{"name": "QUANTCORE_REDIS_PASSWORD", "value": "x"}]),
        "Redis credentials",
    ),
    (
        "env named QUANTCORE_KAFKA_",
        lambda s: s["spark"].update(env=[{"name": "QUANTCORE_KAFKA_PASSWORD", "value": "x"}]),
        "Kafka credentials",
    ),
    (
        "kafka without credentials or insecure",
        lambda s: (s["kafka"].pop("credentials"), s["kafka"].pop("caSecretName")),
        "kafka is secure by default",
    ),
    (
        "kafka insecure with credentials",
        lambda s: s["kafka"].update(insecure=True),
        "kafka.insecure turns TLS and SASL off",
    ),
    (
        "replicas and autoscaling",
        lambda s: s["serving"].update(replicas=2, autoscaling={}),
        "not both",
    ),
    (
        "autoscaling min above max",
        lambda s: s["serving"].update(autoscaling={"minReplicas": 5, "maxReplicas": 2}),
        "must not exceed maxReplicas",
    ),
    ("privileged port", lambda s: s["serving"].update(port=80), "spec.serving.port"),
    (
        "serving neither TLS nor explicitly insecure",
        lambda s: s.pop("serving"),
        "serving is secure by default",
    ),
    (
        "insecure beside TLS",
        lambda s: s["serving"].update(insecure=True),
        "serving.insecure: true contradicts serving.tls",
    ),
    (
        "tokens over plaintext",
        lambda s: s.update(serving={"insecure": True, "auth": {"tokensSecret": "t"}}),
        "tokens need TLS",
    ),
    (
        "client auth not a choice",
        lambda s: s["serving"]["tls"].update(clientAuth="optional"),
        "spec.serving.tls.clientAuth",
    ),
    ("unknown field", lambda s: s.update(shards=3), 'unknown field "spec.shards"'),
    ("bad image", lambda s: s.update(image="Not An Image"), "spec.image"),
    (
        "universe top zero",
        lambda s: (s.pop("symbols"), s.update(universe={"quoteAsset": "USDT", "top": 0})),
        "spec.universe.top",
    ),
]

TRANSITIONS: list[tuple[str, Callable[[dict[str, Any]], object], str]] = [
    (
        "partitions shrink",
        lambda s: s["kafka"].update(partitions=2),
        "kafka.partitions can only grow",
    ),
    (
        "replication change",
        lambda s: s["kafka"].update(replication=3),
        "kafka.replication cannot change",
    ),
    (
        "topic rename",
        lambda s: s["kafka"].update(topics={**s["kafka"]["topics"], "raw": "renamed"}),
        "cannot be renamed",
    ),
]


def _valid(namespace: str) -> dict[str, Any]:
    return manifest(namespace, "kafka:9092", ["BTCUSDT", "ETHUSDT"])


def test_invalid_marketfeeds_are_rejected_with_what_to_fix(
    crd_installed: Path, namespace: str
) -> None:
    assert len(INVALID) + len(TRANSITIONS) >= 15
    for label, mutate, message in INVALID:
        doc = _valid(namespace)
        mutate(doc["spec"])
        result = kubectl(
            crd_installed,
            "create",
            "--validate=strict",
            "-f",
            "-",
            stdin=yaml.safe_dump(doc),
            check=False,
        )
        assert result.returncode != 0, f"{label}: accepted"
        assert message in result.stderr, f"{label}: {result.stderr}"
    # Transition rules need an existing object.
    apply(crd_installed, _valid(namespace))
    for label, mutate, message in TRANSITIONS:
        doc = _valid(namespace)
        mutate(doc["spec"])
        result = kubectl(crd_installed, "apply", "-f", "-", stdin=yaml.safe_dump(doc), check=False)
        assert result.returncode != 0, f"{label}: accepted"
        assert message in result.stderr, f"{label}: {result.stderr}"
    # Growing partitions stays allowed.
    grown = _valid(namespace)
    grown["spec"]["kafka"]["partitions"] = 16
    apply(crd_installed, grown)


def test_spark_scheduling_conf_and_env_are_accepted(crd_installed: Path, namespace: str) -> None:
    doc = _valid(namespace)
    doc["spec"]["spark"].update(
        checkpoint="s3a://quantcore-checkpoints/checkpoints/mf",
        driver={"requestCores": "250m"},
        executor={"requestCores": "0.5"},
        nodeSelector={"quantcore.io/pool": "spark"},
        tolerations=[
            {"key": "quantcore.io/pool", "value": "spark", "effect": "NoSchedule"},
            {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60},
        ],
        sparkConf={"spark.hadoop.fs.s3a.endpoint": "http://minio:9000"},
        env=[
            {"name": "AWS_REGION", "value": "eu-west-1"},
            {
                "name": "AWS_ACCESS_KEY_ID",
                "valueFrom": {"secretKeyRef": {"name": "s3", "key": "access-key"}},
            },
        ],
    )
    apply(crd_installed, doc)
    stored = json.loads(
        kubectl(crd_installed, "get", "marketfeed", FEED, "-n", namespace, "-o", "json").stdout
    )
    spark = MarketFeedSpec.model_validate(stored["spec"]).spark
    assert spark.tolerations[0].operator == "Equal"  # the CRD's default
    assert spark.spark_conf == {"spark.hadoop.fs.s3a.endpoint": "http://minio:9000"}
    assert [e.name for e in spark.env] == ["AWS_REGION", "AWS_ACCESS_KEY_ID"]


def test_crd_defaults_fill_the_spec(crd_installed: Path, namespace: str) -> None:
    doc = _valid(namespace)
    apply(crd_installed, doc)
    stored = json.loads(
        kubectl(crd_installed, "get", "marketfeed", FEED, "-n", namespace, "-o", "json").stdout
    )
    spec = MarketFeedSpec.model_validate(stored["spec"])  # the stored object is a valid model
    assert stored["spec"]["streams"]["depth"]["levels"] == 20
    assert stored["spec"]["kafka"]["deletionPolicy"] == "Retain"
    assert spec.redis.mode == "managed"
    assert os.path.exists(CRD)
