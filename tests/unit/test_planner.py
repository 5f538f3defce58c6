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
        pod = spark[role]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


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
    assert ex["instances"] * ex["cores"] >= 12 * 2 + 1  # book + flow, the malformed counter
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
    external = {
        "mode": "external",
        "url": "rediss://r:6379/0",
        "credentialsSecretName": "r-users",
        "tlsSecretName": "r-ca",
    }
    objs = by_name(plan(sample_feed(redis=external), None, SYMBOLS[:3]).objects)
    assert not any(k.startswith("StatefulSet/") for k in objs)
    serve = objs["Deployment/demo-serve"]["spec"]["template"]["spec"]
    args = serve["containers"][0]["args"]
    assert args[:5] == ["serve", "--redis", "rediss://r:6379/0", "--port", "50051"]
    # Credentials and CA by Secret reference, the serving user's only.
    env = {e["name"]: e for e in serve["containers"][0]["env"]}
    assert env["QUANTCORE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "r-users",
        "key": "serve-password",
    }
    ca = next(v for v in serve["volumes"] if v["name"] == "redis-ca")
    assert ca["secret"] == {"secretName": "r-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}


def test_external_redis_without_a_ca_secret_trusts_the_system_cas() -> None:
    external = {"mode": "external", "url": "rediss://r:6379/0", "credentialsSecretName": "u"}
    objs = by_name(plan(sample_feed(redis=external), None, SYMBOLS[:3]).objects)
    serve = objs["Deployment/demo-serve"]["spec"]["template"]["spec"]
    names = {e["name"] for e in serve["containers"][0]["env"]}
    assert {n for n in names if n.startswith("QUANTCORE_REDIS_")} == {
        "QUANTCORE_REDIS_USERNAME",
        "QUANTCORE_REDIS_PASSWORD",
    }
    assert not any(v["name"] == "redis-ca" for v in serve["volumes"])


@pytest.mark.parametrize(
    ("redis", "message"),
    [
        ({"mode": "external", "url": "rediss://r:6379/0"}, "needs redis.credentialsSecretName"),
        (
            {"mode": "external", "url": "redis://r:6379/0", "credentialsSecretName": "u"},
            "must be rediss://",
        ),
        ({"insecure": True, "tlsSecretName": "t"}, "leave tlsSecretName"),
    ],
)
def test_redis_security_settings_that_contradict_are_refused(
    redis: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sample_feed(redis=redis)


def _pod(objs: dict[str, Any], name: str) -> dict[str, Any]:
    return objs[name]["spec"]["template"]["spec"]


def test_managed_redis_serves_tls_only_with_acl_users_from_its_secrets() -> None:
    objs = by_name(plan(sample_feed(), None, SYMBOLS[:3]).objects)
    redis = _pod(objs, "StatefulSet/demo-redis")
    args = redis["containers"][0]["args"]
    assert args[args.index("--port") + 1] == "0"  # no plaintext listener
    assert args[args.index("--tls-port") + 1] == "6379"
    assert args[args.index("--aclfile") + 1] == "/etc/redis/acl/users.acl"
    volumes = {v["name"]: v for v in redis["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "demo-redis-tls"
    assert volumes["acl"]["emptyDir"]["medium"] == "Memory"
    (init,) = redis["initContainers"]
    assert init["args"] == ["redis-acl", "--out", "/etc/redis/acl/users.acl"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in init["env"]}
    assert refs == {
        "QUANTCORE_REDIS_RELAY_PASSWORD": {
            "name": "demo-redis-credentials",
            "key": "relay-password",
        },
        "QUANTCORE_REDIS_SERVE_PASSWORD": {
            "name": "demo-redis-credentials",
            "key": "serve-password",
        },
    }
    assert planner.redis_url(sample_feed()) == "rediss://demo-redis.default.svc:6379/0"


def _env_vars(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_each_redis_client_gets_only_its_own_user_by_secret_reference() -> None:
    objs = by_name(plan(sample_feed(), None, SYMBOLS[:3]).objects)
    app = objs["SparkApplication/demo-stream"]["spec"]
    driver = _env_vars(app["driver"]["template"]["spec"]["containers"][0])
    serve = _env_vars(_pod(objs, "Deployment/demo-serve")["containers"][0])
    for env, user in ((driver, "relay"), (serve, "serve")):
        assert env["QUANTCORE_REDIS_USERNAME"] == {
            "name": "QUANTCORE_REDIS_USERNAME",
            "value": user,
        }
        password = env["QUANTCORE_REDIS_PASSWORD"]
        assert "value" not in password
        assert password["valueFrom"]["secretKeyRef"]["key"] == f"{user}-password"
        assert env["QUANTCORE_REDIS_CA_FILE"]["value"] == "/etc/quantcore/redis-ca/ca.crt"
    # Executors, feed shards and the Redis container itself hold no client credentials.
    assert "QUANTCORE_REDIS_PASSWORD" not in _env_vars(
        app["executor"]["template"]["spec"]["containers"][0]
    )
    assert "QUANTCORE_REDIS_PASSWORD" not in _env_vars(
        _pod(objs, "Deployment/demo-feed-0")["containers"][0]
    )
    # Clients get the CA alone, never the TLS key.
    ca = next(v for v in _pod(objs, "Deployment/demo-serve")["volumes"] if v["name"] == "redis-ca")
    assert ca["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]


def test_the_credentials_secret_holds_a_password_per_pipeline_user() -> None:
    secret = planner.redis_credentials_secret(sample_feed(), {"relay": "a", "serve": "b"})
    assert secret["metadata"]["name"] == "demo-redis-credentials"
    assert secret["stringData"] == {"relay-password": "a", "serve-password": "b"}


def test_insecure_redis_is_plain_and_passes_no_credentials() -> None:
    feed = sample_feed(redis={"insecure": True})
    objs = by_name(plan(feed, None, SYMBOLS[:3]).objects)
    redis = _pod(objs, "StatefulSet/demo-redis")
    assert "initContainers" not in redis
    assert "--tls-port" not in redis["containers"][0]["args"]
    assert planner.redis_url(feed) == "redis://demo-redis.default.svc:6379/0"
    serve = _pod(objs, "Deployment/demo-serve")["containers"][0]
    assert not [e for e in serve["env"] if e["name"].startswith("QUANTCORE_REDIS_")]


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
        kafka={
            "bootstrap": "k:9092",
            "topics": {"book": "acme.book", "trades": "acme.trades", "flow": "acme.flow"},
        }
    )
    args = by_name(plan(feed, None, SYMBOLS[:3]).objects)["SparkApplication/demo-stream"]["spec"][
        "arguments"
    ]
    flags = dict(zip(args[1::2], args[2::2], strict=True))
    assert flags["--book-topic"] == "acme.book"
    assert flags["--trades-topic"] == "acme.trades"
    assert flags["--flow-topic"] == "acme.flow"
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


# ---- the SparkApplication's pods ---------------------------------------------------------

# Fields of a driver/executor that spark-operator v2.4.0 applies only through its mutating
# webhook (often off): the plan must not rely on any of them.
WEBHOOK_ONLY = {
    "podSecurityContext",
    "securityContext",
    "volumeMounts",
    "nodeSelector",
    "tolerations",
    "env",
    "envFrom",
    "affinity",
    "sidecars",
    "initContainers",
}


def spark_spec(**spark: Any) -> dict[str, Any]:
    feed = sample_feed(spark={"image": "spark:x", **spark})
    app: dict[str, Any] = by_name(plan(feed, None, SYMBOLS[:3]).objects)[
        "SparkApplication/demo-stream"
    ]["spec"]
    return app


def test_spark_pods_are_shaped_by_templates_not_by_webhook_fields() -> None:
    app = spark_spec()
    assert "volumes" not in app  # top-level volumes also need the webhook
    for role, container_name in (
        ("driver", "spark-kubernetes-driver"),
        ("executor", "spark-kubernetes-executor"),
    ):
        part = app[role]
        assert not WEBHOOK_ONLY & set(part), f"{role}: {WEBHOOK_ONLY & set(part)}"
        template = part["template"]
        assert template["metadata"]["labels"] == {
            planner.FEED_LABEL: "demo",
            planner.COMPONENT_LABEL: "stream",
        }
        assert part["labels"] == template["metadata"]["labels"]  # Spark properties too
        pod = template["spec"]
        assert pod["securityContext"] == planner.pod_security()
        (container,) = pod["containers"]
        assert container["name"] == container_name
        assert container["securityContext"] == planner.container_security()
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        scratch = {"/tmp", "/opt/spark/work-dir"}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for path in scratch:
            assert "emptyDir" in volumes[mounts[path]]
        assert "nodeSelector" not in pod
        assert "tolerations" not in pod
        names = [e["name"] for e in container["env"]]
        logged = planner.log_environment(sample_feed())
        # How the job logs, and the context its records carry (no spec.spark.env given).
        assert container["env"][: len(logged)] == logged
        # Driver and executors: the stream job's Kafka user (the executors run the Kafka
        # source and sink) and the brokers' CA.
        kafka = [
            "QUANTCORE_KAFKA_SECURITY_PROTOCOL",
            "QUANTCORE_KAFKA_SASL_MECHANISM",
            "QUANTCORE_KAFKA_USERNAME",
            "QUANTCORE_KAFKA_PASSWORD",
            "QUANTCORE_KAFKA_CA_FILE",
        ]
        assert names[len(logged) : len(logged) + len(kafka)] == kafka
        if role == "driver":
            # The relay's Redis user and the CA (only ca.crt, read-only): nothing else.
            assert set(mounts) == {*scratch, planner.KAFKA_CA_DIR, planner.REDIS_CA_DIR}
            assert names[len(logged) + len(kafka) :] == [
                "QUANTCORE_REDIS_USERNAME",
                "QUANTCORE_REDIS_PASSWORD",
                "QUANTCORE_REDIS_CA_FILE",
            ]
        else:
            assert set(mounts) == {*scratch, planner.KAFKA_CA_DIR}
            assert names == [e["name"] for e in logged] + kafka


def test_spark_pods_request_less_cpu_than_their_cores_by_default() -> None:
    app = spark_spec()
    assert app["driver"]["coreRequest"] == "250m"
    assert app["executor"]["coreRequest"] == "500m"
    assert app["executor"]["cores"] == 1
    sized = spark_spec(driver={"requestCores": "1"}, executor={"cores": 2, "requestCores": "1.5"})
    assert sized["driver"]["coreRequest"] == "1"
    assert sized["executor"]["coreRequest"] == "1.5"
    assert sized["executor"]["cores"] == 2


@pytest.mark.parametrize("bad", ["0", "0m", "0.000", "1.2345", "-1", "1 cpu", "100000000m"])
@pytest.mark.parametrize("role", ["driver", "executor"])
def test_request_cores_must_be_a_positive_cpu_quantity(role: str, bad: str) -> None:
    with pytest.raises(ValueError, match=r"requestCores|request_cores"):
        spark_spec(**{role: {"requestCores": bad}})


def test_dedicated_pool_selector_and_tolerations_reach_both_templates() -> None:
    toleration = {
        "key": "quantcore.io/pool",
        "operator": "Equal",
        "value": "spark",
        "effect": "NoSchedule",
    }
    app = spark_spec(
        nodeSelector={"quantcore.io/pool": "spark"},
        tolerations=[toleration, {"operator": "Exists", "effect": "NoExecute"}],
    )
    for role in ("driver", "executor"):
        pod = app[role]["template"]["spec"]
        assert pod["nodeSelector"] == {"quantcore.io/pool": "spark"}
        assert pod["tolerations"] == [toleration, {"operator": "Exists", "effect": "NoExecute"}]


@pytest.mark.parametrize(
    ("spark", "complaint"),
    [
        ({"nodeSelector": {"bad key!": "x"}}, "node_selector|nodeSelector"),
        ({"nodeSelector": {"pool": "not a value"}}, "node_selector|nodeSelector"),
        ({"tolerations": [{"operator": "Exists", "value": "x"}]}, "tolerations"),
        ({"tolerations": [{"operator": "Sometimes"}]}, "tolerations"),
        ({"tolerations": [{"key": "k", "effect": "Never"}]}, "tolerations"),
        ({"tolerations": [{"value": "spark"}]}, "tolerations"),  # Equal needs a key
        ({"tolerations": [{"key": "k", "tolerationSeconds": 30}]}, "tolerations"),
    ],
)
def test_bad_scheduling_fields_are_refused(spark: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        spark_spec(**spark)


def test_spark_conf_is_merged_under_the_operators_own() -> None:
    app = spark_spec(
        sparkConf={
            "spark.hadoop.fs.s3a.endpoint": "http://minio:9000",
            "spark.sql.streaming.metricsEnabled": "true",
        }
    )
    conf = app["sparkConf"]
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://minio:9000"
    assert conf["spark.sql.streaming.metricsEnabled"] == "true"
    assert conf["spark.local.dir"] == "/tmp/spark-local"
    assert conf["spark.sql.shuffle.partitions"] == "12"


@pytest.mark.parametrize(
    "conf",
    [
        {"hadoop.fs.s3a.endpoint": "x"},  # not a Spark property
        {"spark.local.dir": "/elsewhere"},  # the operator's own
        {"spark.executor.instances": "1"},  # derived from spark.executor
        {"spark.kubernetes.executor.podTemplateFile": "/x"},  # the templates
    ],
)
def test_spark_conf_refuses_foreign_and_reserved_keys(conf: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"spark_conf|sparkConf"):
        spark_spec(sparkConf=conf)


def test_operator_value_wins_if_a_reserved_key_slips_through() -> None:
    # An older CRD would not refuse it; the planner still keeps the job's own settings.
    feed = sample_feed(spark={"image": "spark:x"})
    spark = feed.spec.spark.model_copy(update={"spark_conf": {"spark.local.dir": "/root"}})
    feed = feed.model_copy(update={"spec": feed.spec.model_copy(update={"spark": spark})})
    assert planner.spark_conf(feed, 6)["spark.local.dir"] == "/tmp/spark-local"


def test_env_with_values_and_secret_references_reaches_both_containers() -> None:
    env = [
        {"name": "AWS_REGION", "value": "eu-west-1"},
        {
            "name": "AWS_ACCESS_KEY_ID",
            "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "access-key"}},
        },
    ]
    app = spark_spec(env=env)
    for role in ("driver", "executor"):
        (container,) = app[role]["template"]["spec"]["containers"]
        # After the log settings, so a variable in spec.spark.env wins over them; the
        # driver's Redis credentials (the relay's) follow.
        logged = planner.log_environment(sample_feed())
        assert container["env"][: len(logged) + len(env)] == logged + env
    executor = app["executor"]["template"]["spec"]["containers"][0]
    kafka = planner.kafka_client_env(sample_feed(), "stream")  # the job's Kafka user
    assert executor["env"] == planner.log_environment(sample_feed()) + env + kafka


@pytest.mark.parametrize(
    "env",
    [
        [{"name": "A"}],  # neither value nor valueFrom
        [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
        [{"name": "SPARK_HOME", "value": "/x"}],
        [{"name": "QUANTCORE_REDIS_PASSWORD", "value": "x"}],
        [{"name": "1BAD", "value": "x"}],
        [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}],
    ],
)
def test_bad_env_is_refused(env: list[dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match="env"):
        spark_spec(env=env)


@pytest.mark.parametrize(
    "checkpoint",
    ["s3a://quantcore-checkpoints/checkpoints/majors", "file:///tmp/q", "hdfs://nn:8020/q"],
)
def test_checkpoint_accepts_durable_uris(checkpoint: str) -> None:
    args = spark_spec(checkpoint=checkpoint)["arguments"]
    assert args[args.index("--checkpoint") + 1] == checkpoint


@pytest.mark.parametrize("checkpoint", ["s3a:/bucket", "/tmp/q", "s3a://bucket/with space"])
def test_checkpoint_refuses_what_is_not_a_uri(checkpoint: str) -> None:
    with pytest.raises(ValueError, match="checkpoint"):
        spark_spec(checkpoint=checkpoint)


# ---- serving -----------------------------------------------------------------------------


def test_serving_serves_metrics_where_its_port_and_service_say() -> None:
    objs = by_name(plan(sample_feed(), None, SYMBOLS[:3]).objects)
    (container,) = objs["Deployment/demo-serve"]["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    declared = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(args[args.index("--metrics-port") + 1]) == declared["metrics"]
    service_ports = {p["name"]: p for p in objs["Service/demo-serve"]["spec"]["ports"]}
    assert service_ports["metrics"]["targetPort"] == "metrics"


def test_serving_reads_the_whole_routing_table_read_only() -> None:
    p = plan(sample_feed(sharding={"symbolsPerShard": 2}), None, SYMBOLS[:5])
    objs = by_name(p.objects)
    pod = objs["Deployment/demo-serve"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    path = container["args"][container["args"].index("--routing") + 1]
    (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    configmap = objs[f"ConfigMap/{volume['configMap']['name']}"]
    # Every shard's symbols, not one shard's slice.
    table = RoutingTable.from_json(configmap["data"][path.rsplit("/", 1)[1]])
    assert table.symbols == p.table.symbols
    assert p.table.shards == 3


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _quantcore_containers(objects: Any) -> dict[str, dict[str, Any]]:
    """Every container that runs quantcore: feed shards, serving, the Spark driver and
    executors (Redis is not ours)."""
    found: dict[str, dict[str, Any]] = {}
    for o in objects:
        name = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] == "Deployment":
            for c in o["spec"]["template"]["spec"]["containers"]:
                found[f"{name}/{c['name']}"] = c
        elif o["kind"] == "SparkApplication":
            for role in ("driver", "executor"):
                (c,) = o["spec"][role]["template"]["spec"]["containers"]
                found[f"{name}/{role}"] = c
    return found


def test_every_quantcore_pod_logs_json_with_its_context() -> None:
    objects = plan(sample_feed("prices", "markets"), None, SYMBOLS[:30]).objects
    containers = _quantcore_containers(objects)
    assert sorted(containers) == [
        "Deployment/prices-feed-0/feed",
        "Deployment/prices-feed-1/feed",
        "Deployment/prices-serve/serve",
        "SparkApplication/prices-stream/driver",
        "SparkApplication/prices-stream/executor",
    ]
    for key, container in containers.items():
        env = _env(container)
        assert env["QUANTCORE_LOG_FORMAT"] == "json", key
        assert env["QUANTCORE_MARKETFEED"] == "prices", key
        # The pod's own name and namespace, from the downward API.
        assert env["QUANTCORE_NAMESPACE"] == {
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}
        }
        assert env["QUANTCORE_POD"] == {
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}
        }
    # The shard number comes from the shard's own --shard (each record carries it).
    shard = by_name(objects)["Deployment/prices-feed-0"]["spec"]["template"]["spec"]
    assert "--shard" in shard["containers"][0]["args"]


def test_monitoring_log_format_text_reaches_every_quantcore_pod() -> None:
    feed = sample_feed(monitoring={"logFormat": "text"})
    containers = _quantcore_containers(plan(feed, None, SYMBOLS[:3]).objects)
    assert containers
    for key, container in containers.items():
        assert _env(container)["QUANTCORE_LOG_FORMAT"] == "text", key


def test_log_format_is_json_or_text() -> None:
    with pytest.raises(ValueError, match=r"log_format|logFormat"):
        sample_feed(monitoring={"logFormat": "xml"})


def _serve_pod(feed: MarketFeed) -> dict[str, Any]:
    objs = by_name(plan(feed, None, SYMBOLS[:3]).objects)
    return dict(objs[f"Deployment/{feed.name}-serve"]["spec"]["template"]["spec"])


def test_serving_mounts_the_tls_and_token_secrets_read_only_and_uses_them() -> None:
    feed = sample_feed(
        serving={
            "tls": {"secretName": "demo-tls", "clientAuth": "require"},
            "auth": {"tokensSecret": "demo-tokens"},
            "limits": {"streamsPerIdentity": 5, "symbolsPerStream": 7},
            "reflection": True,
        }
    )
    pod = _serve_pod(feed)
    (container,) = pod["containers"]
    args = container["args"]

    def arg(flag: str) -> str:
        return str(args[args.index(flag) + 1])

    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "demo-tls"
    assert volumes["tokens"]["secret"]["secretName"] == "demo-tokens"
    assert mounts["tls"]["readOnly"] is True
    assert mounts["tokens"]["readOnly"] is True
    # The whole Secret as a directory (no subPath), so a renewal reaches the server.
    assert "subPath" not in mounts["tls"]
    assert "subPath" not in mounts["tokens"]
    assert arg("--tls-dir") == mounts["tls"]["mountPath"]
    assert arg("--tls-client-auth") == "require"
    assert arg("--tokens") == mounts["tokens"]["mountPath"] + "/tokens"
    assert (arg("--streams-per-identity"), arg("--symbols-per-stream")) == ("5", "7")
    assert arg("--reflection") == "on"
    assert "--insecure" not in args
    # Group-readable 0440 files, owned by the pod's fsGroup: the image's group reads them.
    assert volumes["tls"]["secret"]["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == planner.RUNTIME_GID


def test_serving_probes_readiness_on_the_plaintext_health_port() -> None:
    pod = _serve_pod(sample_feed())
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    args = container["args"]
    assert container["readinessProbe"] == {"grpc": {"port": ports["health"]}}
    assert int(args[args.index("--health-port") + 1]) == ports["health"] != ports["grpc"]
    # Liveness is a TCP connect to the TLS port: no handshake needed.
    assert container["livenessProbe"]["tcpSocket"] == {"port": ports["grpc"]}
    # Reflection is off unless asked for.
    assert args[args.index("--reflection") + 1] == "off"


def test_insecure_serving_is_explicit() -> None:
    pod = _serve_pod(sample_feed(serving={"insecure": True}))
    (container,) = pod["containers"]
    assert "--insecure" in container["args"]
    assert "--tls-dir" not in container["args"]
    # No serving Secret; Redis's CA stays (Redis has its own setting, spec.redis.insecure).
    assert [v["name"] for v in pod["volumes"] if "secret" in v] == ["redis-ca"]
    # Neither TLS nor insecure: not served (the CRD refuses it; the reconcile stops at it).
    spec = MarketFeedSpec.model_validate(
        {**sample_feed().spec.model_dump(by_alias=True, exclude_none=True), "serving": {}}
    )
    assert not spec.serving.secured
    assert sample_feed().spec.serving.secured


@pytest.mark.parametrize(
    ("serving", "why"),
    [
        ({"tls": {"secretName": "t"}, "insecure": True}, "contradicts"),
        ({"insecure": True, "auth": {"tokensSecret": "t"}}, "tokens need TLS"),
        ({"tls": {"secretName": "t"}, "healthPort": 50051}, "healthPort must differ"),
        ({"tls": {"secretName": "Not_A_Name"}}, "secretName"),
    ],
)
def test_serving_security_refuses_contradictions(serving: dict[str, Any], why: str) -> None:
    body = sample_feed().spec.model_dump(by_alias=True, exclude_none=True)
    with pytest.raises(ValueError, match=why):
        MarketFeedSpec.model_validate({**body, "serving": serving})


def test_an_insecure_kafka_gives_no_pod_credentials_or_ca() -> None:
    feed = sample_feed(kafka={"bootstrap": "kafka:9092", "insecure": True})
    objects = {f"{o['kind']}/{o['metadata']['name']}": o for o in plan(feed, None, SYMBOLS).objects}
    shard = objects[f"Deployment/{planner.shard_deployment_name('demo', 0)}"]["spec"]["template"]
    (container,) = shard["spec"]["containers"]
    kafka = [e for e in container["env"] if e["name"].startswith("QUANTCORE_KAFKA_")]
    assert kafka == [{"name": "QUANTCORE_KAFKA_SECURITY_PROTOCOL", "value": "PLAINTEXT"}]
    assert all(v["name"] != "kafka-ca" for v in shard["spec"]["volumes"])


def test_each_pod_gets_its_own_roles_kafka_secret_alone() -> None:
    feed = sample_feed()
    objects = {f"{o['kind']}/{o['metadata']['name']}": o for o in plan(feed, None, SYMBOLS).objects}

    def secrets(container: dict[str, Any]) -> set[str]:
        return {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in container["env"]
            if e["name"].startswith("QUANTCORE_KAFKA_") and "valueFrom" in e
        }

    shard = objects[f"Deployment/{planner.shard_deployment_name('demo', 0)}"]
    assert secrets(shard["spec"]["template"]["spec"]["containers"][0]) == {"demo-kafka-feed"}
    app = objects[f"SparkApplication/{planner.spark_application_name('demo')}"]["spec"]
    for role in ("driver", "executor"):
        (container,) = app[role]["template"]["spec"]["containers"]
        assert secrets(container) == {"demo-kafka-stream"}, role
    serve = objects[f"Deployment/{planner.serve_name('demo')}"]["spec"]["template"]["spec"]
    assert all(not secrets(c) for c in serve["containers"])  # serving never talks to Kafka


def _stream_args(feed: MarketFeed) -> list[str]:
    objects = by_name(plan(feed, None, SYMBOLS[:30]).objects)
    app = objects[f"SparkApplication/{planner.spark_application_name(feed.name)}"]["spec"]
    return list(app["arguments"])


def test_a_lake_gives_the_stream_job_its_sink_interval_retention_and_a_slot() -> None:
    plain = sample_feed(kafka={"partitions": 3})
    assert "--lake" not in _stream_args(plain)
    lake = {"location": "s3a://quantcore-data/lake/", "retentionDays": 5, "intervalSeconds": 60}
    feed = sample_feed(kafka={"partitions": 3}, lake=lake)
    args = _stream_args(feed)
    sink = args[args.index("--lake") + 1]
    assert sink.startswith("s3a://quantcore-data/lake/demo-")
    assert sink == planner.lake_sink(feed)
    assert args[args.index("--lake-interval") + 1] == "60 seconds"
    # The sink's log forgets files only after retention (the bucket's rule) removed them.
    assert args[args.index("--lake-retention") + 1] == "7d"
    assert planner.task_slots(feed.spec, 3) == planner.task_slots(plain.spec, 3) + 1
    keep_all = sample_feed(lake={**lake, "retentionDays": 0})
    assert "--lake-retention" not in _stream_args(keep_all)


def test_a_lake_archives_the_raw_topic_and_serving_reads_the_whole_lake() -> None:
    lake = {"location": "s3a://quantcore-data/lake"}
    spark = {
        "image": "s:1",
        "checkpoint": "s3a://b/ck",
        "env": [
            {"name": "AWS_REGION", "value": "eu-west-1"},
            {
                "name": "AWS_SECRET_ACCESS_KEY",
                "valueFrom": {"secretKeyRef": {"name": "s3", "key": "k"}},
            },
            {"name": "JAVA_TOOL_OPTIONS", "value": "-Xss4m"},
        ],
    }
    feed = sample_feed(lake=lake, spark=spark)
    args = _stream_args(feed)
    assert args[args.index("--raw-topic") + 1] == feed.spec.kafka.topics.raw
    objects = by_name(plan(feed, None, SYMBOLS[:30]).objects)
    pod = objects[f"Deployment/{planner.serve_name(feed.name)}"]["spec"]["template"]["spec"]
    (serve,) = pod["containers"]
    served = serve["args"]
    # Every sink of the location (a new checkpoint's too), mirrored into a volume of its own.
    assert served[served.index("--lake") + 1] == "s3a://quantcore-data/lake"
    cache = served[served.index("--lake-cache") + 1]
    (mount,) = [m for m in serve["volumeMounts"] if m["mountPath"] == cache]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume
    # The stream job's S3 settings, and nothing else of its environment.
    names = [e["name"] for e in serve["env"]]
    assert "AWS_REGION" in names
    assert "AWS_SECRET_ACCESS_KEY" in names
    assert "JAVA_TOOL_OPTIONS" not in names
    plain = by_name(plan(sample_feed(), None, SYMBOLS[:30]).objects)
    (plain_serve,) = plain[f"Deployment/{planner.serve_name('demo')}"]["spec"]["template"]["spec"][
        "containers"
    ]
    assert "--lake" not in plain_serve["args"]


def test_serving_runs_as_the_service_account_the_feed_names_and_still_gets_no_api_token() -> None:
    # Unnamed: the namespace's default account, and no token for it.
    plain = _serve_pod(sample_feed())
    assert "serviceAccountName" not in plain
    assert plain["automountServiceAccountToken"] is False
    lake = {"location": "s3a://quantcore-data/lake"}
    feed = sample_feed(lake=lake, serving={"serviceAccount": "quantcore-serving"})
    pod = _serve_pod(feed)
    # Named (e.g. annotated for IRSA): EKS's webhook adds the web-identity token itself, so the
    # API server token stays off and the operator adds no token volume or AWS_* variable.
    assert pod["serviceAccountName"] == "quantcore-serving"
    assert pod["automountServiceAccountToken"] is False
    assert not [v for v in pod["volumes"] if "projected" in v]
    (serve,) = pod["containers"]
    assert not [e for e in serve["env"] if e["name"].startswith("AWS_")]
    assert "--lake" in serve["args"]
    # Only the serving pods: the Spark job keeps spec.spark.serviceAccount.
    app = by_name(plan(feed, None, SYMBOLS[:30]).objects)[f"SparkApplication/{feed.name}-stream"]
    assert app["spec"]["driver"]["serviceAccount"] == "spark"
    # And no ServiceAccount is ever planned: the account is the user's (or the chart's).
    assert not [o for o in plan(feed, None, SYMBOLS[:30]).objects if o["kind"] == "ServiceAccount"]


@pytest.mark.parametrize("account", ["Serving", "-serving", "a" * 64, "serving.sa"])
def test_the_serving_service_account_must_be_a_kubernetes_name(account: str) -> None:
    with pytest.raises(ValueError, match=r"serviceAccount|service_account"):
        sample_feed(serving={"serviceAccount": account})


def test_a_new_checkpoint_writes_a_new_lake_sink() -> None:
    lake = {"location": "s3a://quantcore-data/lake"}
    first = sample_feed(lake=lake, spark={"image": "s:1", "checkpoint": "s3a://b/ck/one"})
    second = sample_feed(lake=lake, spark={"image": "s:1", "checkpoint": "s3a://b/ck/two"})
    assert planner.lake_sink(first) != planner.lake_sink(second)
    assert planner.lake_sink(first) == planner.lake_sink(
        sample_feed(lake=lake, spark={"image": "s:2", "checkpoint": "s3a://b/ck/one"})
    )


@pytest.mark.parametrize("location", ["/data/lake", "file:///lake", "s3://b/lake", "s3a://B/x"])
def test_the_lake_must_be_on_s3a(location: str) -> None:
    with pytest.raises(ValueError, match="location"):
        sample_feed(lake={"location": location})
