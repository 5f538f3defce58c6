"""What a MarketFeed becomes: spec + current routing table -> new table + desired objects.

Pure: no cluster, no network. Try it in a REPL:

    >>> from quantcore.operator.planner import plan, sample_feed
    >>> p = plan(sample_feed(), current=None, symbols=["BTCUSDT", "ETHUSDT"])
    >>> [f"{o['kind']}/{o['metadata']['name']}" for o in p.objects]

Each feed shard reads its own one-shard routing file from its own ConfigMap, mounted as a
volume, so a reshard rewrites only the ConfigMaps of shards whose symbols changed; the shard
Deployments never change and the shards resubscribe in place when the file changes. The
SparkApplication carries no symbol list: a reshard never touches its spec.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quantcore.feedshard import POD_METRICS_PORT, shard_args, shard_environment
from quantcore.operator.api import MarketFeed, MarketFeedSpec
from quantcore.routing import CONFIGMAP_KEY, RoutingTable, rebalance

Obj = dict[str, Any]

ROUTING_DIR = "/etc/quantcore/routing"
METRICS_PORT = POD_METRICS_PORT  # feed shards and serving alike
REDIS_PORT = 6379
FEED_LABEL = "quantcore.io/marketfeed"
COMPONENT_LABEL = "app.kubernetes.io/component"
SHARD_LABEL = "quantcore.io/shard"


@dataclass(frozen=True)
class Plan:
    table: RoutingTable
    objects: tuple[Obj, ...]
    changed_shards: frozenset[int]  # shards whose symbol set differs from the current table

    def names(self) -> list[str]:
        return [f"{o['kind']}/{o['metadata']['name']}" for o in self.objects]


# ---- naming ---------------------------------------------------------------------------


def routing_configmap_name(feed: str) -> str:
    return f"{feed}-routing"


def shard_configmap_name(feed: str, shard: int) -> str:
    return f"{feed}-shard-{shard}"


def shard_deployment_name(feed: str, shard: int) -> str:
    return f"{feed}-feed-{shard}"


def feed_service_name(feed: str) -> str:
    """The headless metrics Service of every feed shard (scrapes, the operator's /live)."""
    return f"{feed}-feed"


def spark_application_name(feed: str) -> str:
    return f"{feed}-stream"


def stream_metrics_service_name(feed: str) -> str:
    """The headless Service in front of the Spark driver's metrics (relay, queries)."""
    return f"{feed}-stream-metrics"


def redis_name(feed: str) -> str:
    return f"{feed}-redis"


def serve_name(feed: str) -> str:
    return f"{feed}-serve"


def redis_url(feed: MarketFeed) -> str:
    if feed.spec.redis.url:
        return feed.spec.redis.url
    return f"redis://{redis_name(feed.name)}.{feed.namespace}.svc:{REDIS_PORT}/0"


# ---- sizing ---------------------------------------------------------------------------


def input_partitions(spec: MarketFeedSpec, partitions: int) -> int:
    """Kafka partitions the stream job reads: `book`, plus `flow` when trades are on."""
    return partitions * (2 if spec.streams.trades else 1)


def task_slots(spec: MarketFeedSpec, partitions: int) -> int:
    """Task slots the stream job needs: a real-time task holds one per Kafka partition for its
    whole batch, for `book` and, when trades are on, `flow` (the trade-flow query); the
    micro-batch malformed-trade counter then needs one more, free between its batches."""
    return partitions * 2 + 1 if spec.streams.trades else partitions


def executor_instances(spec: MarketFeedSpec, partitions: int) -> int:
    """Executors so that real-time mode has a task slot for every partition of every query."""
    if spec.spark.executor.instances is not None:
        return spec.spark.executor.instances
    return max(1, math.ceil(task_slots(spec, partitions) / spec.spark.executor.cores))


def redis_memory_mib(symbols: int, levels: int) -> int:
    """Redis maxmemory in MiB: a signal hash (~1 KiB) plus a book snapshot per symbol, x4."""
    per_symbol_bytes = 1024 + levels * 2 * 48
    need = 64 + math.ceil(symbols * per_symbol_bytes * 4 / 2**20)
    # Rounded up to a power of two: a new size restarts Redis, so only doublings may.
    return int(2 ** math.ceil(math.log2(need)))


def _spark_memory(quantity: str) -> str:
    """Kubernetes `512Mi`/`2Gi` -> Spark's `512m`/`2g`."""
    return quantity[:-2] + quantity[-2].lower()


# ---- pod security ---------------------------------------------------------------------


def pod_security() -> Obj:
    """The `restricted` Pod Security Standard, pod level."""
    return {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def container_security() -> Obj:
    """The `restricted` Pod Security Standard, container level."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


_TMP_VOLUME = {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}
_TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}


# ---- objects --------------------------------------------------------------------------


def _meta(feed: MarketFeed, name: str, component: str, **extra: str) -> Obj:
    return {
        "name": name,
        "namespace": feed.namespace,
        "labels": {
            "app.kubernetes.io/name": "quantcore",
            "app.kubernetes.io/managed-by": "quantcore-operator",
            COMPONENT_LABEL: component,
            FEED_LABEL: feed.name,
            **extra,
        },
    }


def _selector(feed: MarketFeed, component: str, **extra: str) -> dict[str, str]:
    return {FEED_LABEL: feed.name, COMPONENT_LABEL: component, **extra}


def shard_table(table: RoutingTable, shard: int) -> RoutingTable:
    """The one-shard table a feed shard reads: its own routes only, so it changes only
    when that shard's symbols (or the partition count) change."""
    return RoutingTable.of(
        [r for r in table.routes if r.shard == shard],
        partitions=table.partitions,
        shards=shard + 1,
    )


def routing_configmap(feed: MarketFeed, table: RoutingTable) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(feed, routing_configmap_name(feed.name), "routing"),
        "data": {CONFIGMAP_KEY: table.to_json()},
    }


def shard_configmap(feed: MarketFeed, table: RoutingTable, shard: int) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(
            feed, shard_configmap_name(feed.name, shard), "feed", **{SHARD_LABEL: str(shard)}
        ),
        "data": {CONFIGMAP_KEY: shard_table(table, shard).to_json()},
    }


def shard_deployment(feed: MarketFeed, shard: int) -> Obj:
    spec = feed.spec
    labels = _selector(feed, "feed", **{SHARD_LABEL: str(shard)})
    # /metrics for Prometheus and /healthz (503 until the shard is healthy) for the probe.
    args = shard_args(
        routing=f"{ROUTING_DIR}/{CONFIGMAP_KEY}",
        shard=shard,
        kafka=spec.kafka.bootstrap,
        ws_url=spec.endpoints.ws_url,
        rest_url=spec.endpoints.rest_url,
        metrics_port=METRICS_PORT,
    )
    environment = shard_environment(
        levels=spec.streams.depth.levels,
        interval_ms=spec.streams.depth.interval_ms,
        trades=spec.streams.trades,
        book_ticker=spec.streams.book_ticker,
        topics=spec.kafka.topics.names(),
    )
    env = [{"name": name, "value": value} for name, value in environment.items()]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(
            feed, shard_deployment_name(feed.name, shard), "feed", **{SHARD_LABEL: str(shard)}
        ),
        "spec": {
            "replicas": 1,
            # One producer per shard at a time; an overlap would only yield dropped duplicates.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security(),
                    "containers": [
                        {
                            "name": "feed",
                            "image": spec.image,
                            "command": ["quantcore"],
                            "args": args,
                            "env": env,
                            "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
                            # /healthz is 503 without a routing table or with a symbol not
                            # live for over a minute: such a shard shows as not available.
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": "metrics"},
                                "periodSeconds": 10,
                                "timeoutSeconds": 5,
                                "failureThreshold": 3,
                            },
                            # Alive while its event loop answers; not /healthz, which an
                            # exchange outage turns to 503 and a restart would not fix.
                            "livenessProbe": {
                                "httpGet": {"path": "/metrics", "port": "metrics"},
                                "initialDelaySeconds": 10,
                                "periodSeconds": 20,
                                "timeoutSeconds": 5,
                                "failureThreshold": 3,
                            },
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"memory": "512Mi"},
                            },
                            "securityContext": container_security(),
                            "volumeMounts": [
                                {"name": "routing", "mountPath": ROUTING_DIR, "readOnly": True},
                                _TMP_MOUNT,
                            ],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "routing",
                            "configMap": {"name": shard_configmap_name(feed.name, shard)},
                        },
                        _TMP_VOLUME,
                    ],
                },
            },
        },
    }


def feed_metrics_service(feed: MarketFeed) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(feed, feed_service_name(feed.name), "feed"),
        "spec": {
            "clusterIP": "None",
            # Its DNS names every shard, ready or not: the operator asks each for /live while
            # handing symbols over, and a shard with a book still syncing is not ready.
            "publishNotReadyAddresses": True,
            "selector": _selector(feed, "feed"),
            "ports": [{"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"}],
        },
    }


# Spark's own names for the container it takes from a pod template (the spark-operator
# tells spark-submit these, and Spark picks the template container by them).
SPARK_CONTAINER = {"driver": "spark-kubernetes-driver", "executor": "spark-kubernetes-executor"}
SPARK_WORK_DIR = "/opt/spark/work-dir"


def spark_pod_template(feed: MarketFeed, role: str) -> Obj:
    """The driver's or executors' pod template (a core/v1 PodTemplateSpec).

    The spark-operator applies a driver's or executor's securityContext, volumes, nodeSelector
    and tolerations only through its mutating webhook, which is often off; then they would be
    dropped silently. A pod template goes to spark-submit itself, so Spark builds its pods on
    it whether the webhook runs or not.
    """
    spark = feed.spec.spark
    container: Obj = {
        "name": SPARK_CONTAINER[role],
        "securityContext": container_security(),
        "volumeMounts": [_TMP_MOUNT, {"name": "work-dir", "mountPath": SPARK_WORK_DIR}],
    }
    if spark.env:
        container["env"] = [e.to_kubernetes() for e in spark.env]
    pod: Obj = {
        "securityContext": pod_security(),
        "containers": [container],
        # The root filesystem is read-only: Spark writes scratch files under /tmp and
        # executors fetch the application's files into their working directory.
        "volumes": [_TMP_VOLUME, {"name": "work-dir", "emptyDir": {"sizeLimit": "1Gi"}}],
    }
    if spark.node_selector:
        pod["nodeSelector"] = dict(spark.node_selector)
    if spark.tolerations:
        pod["tolerations"] = [t.to_kubernetes() for t in spark.tolerations]
    if role == "driver":
        # The driver runs the relay and serves its metrics (`quantcore stream --metrics-port`).
        container["ports"] = [{"name": "metrics", "containerPort": METRICS_PORT}]
    return {"metadata": {"labels": _selector(feed, "stream")}, "spec": pod}


def stream_metrics_service(feed: MarketFeed) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(feed, stream_metrics_service_name(feed.name), "stream"),
        "spec": {
            "clusterIP": "None",
            # Spark labels its driver pod spark-role=driver; executors serve no metrics.
            "selector": {**_selector(feed, "stream"), "spark-role": "driver"},
            "ports": [{"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"}],
        },
    }


def spark_conf(feed: MarketFeed, partitions: int) -> dict[str, str]:
    """spec.spark.sparkConf with the operator's own properties over it.

    The CRD refuses the keys the operator derives (api.RESERVED_SPARK_CONF); should one get
    through anyway (an older CRD), the operator's value wins, because the job depends on it.
    """
    spec = feed.spec
    return {
        **spec.spark.spark_conf,
        "spark.sql.shuffle.partitions": str(input_partitions(spec, partitions)),
        "spark.local.dir": "/tmp/spark-local",
    }


def spark_application(feed: MarketFeed, partitions: int) -> Obj:
    spec = feed.spec
    spark = spec.spark
    labels = _selector(feed, "stream")
    return {
        "apiVersion": "sparkoperator.k8s.io/v1beta2",
        "kind": "SparkApplication",
        "metadata": _meta(feed, spark_application_name(feed.name), "stream"),
        "spec": {
            "type": "Python",
            "pythonVersion": "3",
            "mode": "cluster",
            "image": spark.image,
            "imagePullPolicy": "IfNotPresent",
            "mainApplicationFile": spark.main_application_file,
            # No symbols here: the job reads whole topics, so a reshard never restarts it.
            "arguments": [
                "stream",
                "--kafka",
                spec.kafka.bootstrap,
                "--redis",
                redis_url(feed),
                "--checkpoint",
                spark.checkpoint,
                "--trigger",
                spark.trigger,
                # The same topics the shards write (the signals topic is named after book).
                "--book-topic",
                spec.kafka.topics.book,
                "--trades-topic",
                spec.kafka.topics.trades,
                "--flow-topic",
                spec.kafka.topics.flow,
                "--max-levels",
                str(spec.streams.depth.levels),
                "--metrics-port",
                str(METRICS_PORT),
            ],
            "sparkVersion": spark.spark_version,
            "restartPolicy": {
                "type": "Always",
                "onFailureRetryInterval": 10,
                "onSubmissionFailureRetryInterval": 30,
            },
            "sparkConf": spark_conf(feed, partitions),
            # Labels and the CPU request travel as Spark properties (no webhook needed);
            # everything else about the pods is in their templates.
            "driver": {
                "labels": labels,
                "cores": spark.driver.cores,
                "coreRequest": spark.driver.request_cores,
                "memory": _spark_memory(spark.driver.memory),
                "serviceAccount": spark.service_account,
                "template": spark_pod_template(feed, "driver"),
            },
            "executor": {
                "labels": labels,
                "instances": executor_instances(spec, partitions),
                "cores": spark.executor.cores,
                "coreRequest": spark.executor.request_cores,
                "memory": _spark_memory(spark.executor.memory),
                "template": spark_pod_template(feed, "executor"),
            },
        },
    }


def redis_objects(feed: MarketFeed, symbols: int) -> list[Obj]:
    if feed.spec.redis.mode == "external":
        return []
    name = redis_name(feed.name)
    labels = _selector(feed, "redis")
    mib = redis_memory_mib(symbols, feed.spec.streams.depth.levels)
    security = {**container_security(), "runAsUser": 999, "runAsGroup": 999}
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(feed, name, "redis"),
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {**pod_security(), "fsGroup": 999},
                    "containers": [
                        {
                            "name": "redis",
                            "image": feed.spec.redis.image,
                            # Signals are derived state, rebuilt from Kafka: no persistence.
                            "args": [
                                "--maxmemory",
                                f"{mib}mb",
                                "--maxmemory-policy",
                                "noeviction",
                                "--save",
                                "",
                                "--appendonly",
                                "no",
                            ],
                            "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
                            "resources": {
                                "requests": {"cpu": "100m", "memory": f"{mib}Mi"},
                                "limits": {"memory": f"{mib + mib // 2}Mi"},
                            },
                            "readinessProbe": {"tcpSocket": {"port": "redis"}},
                            "livenessProbe": {
                                "tcpSocket": {"port": "redis"},
                                "initialDelaySeconds": 10,
                                "periodSeconds": 20,
                            },
                            "securityContext": security,
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}, _TMP_MOUNT],
                        }
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}, _TMP_VOLUME],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(feed, name, "redis"),
        "spec": {
            "selector": labels,
            "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis"}],
        },
    }
    return [statefulset, service]


def serving_objects(feed: MarketFeed) -> list[Obj]:
    spec = feed.spec
    name = serve_name(feed.name)
    labels = _selector(feed, "serve")
    port = spec.serving.port
    scaling = spec.serving.autoscaling
    deployment_spec: Obj = {
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "automountServiceAccountToken": False,
                "securityContext": pod_security(),
                "containers": [
                    {
                        "name": "serve",
                        "image": spec.image,
                        "command": ["quantcore"],
                        # The whole routing table names the served symbols: a symbol
                        # that leaves the feed leaves the API, though Redis keeps its value.
                        "args": [
                            "serve",
                            "--redis",
                            redis_url(feed),
                            "--port",
                            str(port),
                            "--metrics-port",
                            str(METRICS_PORT),
                            "--routing",
                            f"{ROUTING_DIR}/{CONFIGMAP_KEY}",
                        ],
                        "ports": [
                            {"name": "grpc", "containerPort": port},
                            {"name": "metrics", "containerPort": METRICS_PORT},
                        ],
                        "readinessProbe": {"grpc": {"port": port}},
                        # The port, not gRPC health: NOT_SERVING while Redis is away is
                        # for readiness; a restart would not bring Redis back.
                        "livenessProbe": {
                            "tcpSocket": {"port": port},
                            "initialDelaySeconds": 10,
                            "periodSeconds": 20,
                        },
                        "resources": {
                            "requests": {"cpu": "200m", "memory": "128Mi"},
                            "limits": {"memory": "512Mi"},
                        },
                        "securityContext": container_security(),
                        "volumeMounts": [
                            {"name": "routing", "mountPath": ROUTING_DIR, "readOnly": True},
                            _TMP_MOUNT,
                        ],
                    }
                ],
                "volumes": [
                    {"name": "routing", "configMap": {"name": routing_configmap_name(feed.name)}},
                    _TMP_VOLUME,
                ],
            },
        },
    }
    if scaling is None:
        # Leaving replicas out under autoscaling lets the HPA own it without a tug of war.
        deployment_spec["replicas"] = spec.serving.replicas or 2
    objects: list[Obj] = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(feed, name, "serve"),
            "spec": deployment_spec,
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(feed, name, "serve"),
            "spec": {
                "selector": labels,
                "ports": [
                    {"name": "grpc", "port": port, "targetPort": "grpc", "appProtocol": "grpc"},
                    {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"},
                ],
            },
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _meta(feed, name, "serve"),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}},
        },
    ]
    if scaling is not None:
        objects.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": _meta(feed, name, "serve"),
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": scaling.min_replicas,
                    "maxReplicas": scaling.max_replicas,
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {
                                    "type": "Utilization",
                                    "averageUtilization": scaling.target_cpu_percent,
                                },
                            },
                        }
                    ],
                },
            }
        )
    return objects


def service_monitor(feed: MarketFeed) -> Obj:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(feed, feed.name, "monitoring"),
        "spec": {
            "selector": {"matchLabels": {FEED_LABEL: feed.name}},
            "namespaceSelector": {"matchNames": [feed.namespace]},
            "endpoints": [{"port": "metrics", "interval": "15s"}],
        },
    }


# ---- the plan -------------------------------------------------------------------------


def next_table(
    spec: MarketFeedSpec, current: RoutingTable | None, symbols: list[str], min_partitions: int = 0
) -> RoutingTable:
    """The sharding: the routing table for `symbols` from `current`, by the routing rules.

    Local mode (`quantcore up`) shards with this too, so it cannot drift from the cluster.
    """
    return rebalance(
        current,
        symbols,
        spec.sharding.symbols_per_shard,
        max(spec.kafka.partitions, min_partitions),
    )


def plan(
    feed: MarketFeed,
    current: RoutingTable | None,
    symbols: list[str],
    min_partitions: int = 0,
    shard_tables: Mapping[int, RoutingTable] | None = None,
) -> Plan:
    """The next routing table and every object the MarketFeed should own.

    `min_partitions` is the partition count the topics already have (they may exceed the
    spec; partitions never shrink). `shard_tables` are the one-shard tables to write now
    while symbols are handed over (quantcore.operator.handover): a shard there above the
    table's shard count keeps its Deployment until it holds nothing. Default: the table's.
    """
    spec = feed.spec
    table = next_table(spec, current, symbols, min_partitions)
    if shard_tables is None:
        shard_tables = {i: shard_table(table, i) for i in range(table.shards)}
    old = current or RoutingTable(partitions=0, shards=0)
    changed = frozenset(
        i
        for i in range(max(table.shards, old.shards))
        if shard_table(table, i) != shard_table(old, i)
    )
    objects: list[Obj] = [routing_configmap(feed, table)]
    for shard in sorted(set(range(table.shards)) | set(shard_tables)):
        objects.append(shard_configmap(feed, shard_tables.get(shard, table), shard))
        objects.append(shard_deployment(feed, shard))
    objects.append(feed_metrics_service(feed))
    objects.extend(redis_objects(feed, len(table.routes)))
    objects.append(spark_application(feed, table.partitions))
    objects.append(stream_metrics_service(feed))
    objects.extend(serving_objects(feed))
    if spec.monitoring.service_monitor:
        objects.append(service_monitor(feed))
    return Plan(table=table, objects=tuple(objects), changed_shards=changed)


def sample_feed(name: str = "demo", namespace: str = "default", **spec: Any) -> MarketFeed:
    """A small MarketFeed for REPL exploration and tests."""
    body = {
        "image": "ghcr.io/quantcore/quantcore:0.1.0",
        "symbols": ["BTCUSDT", "ETHUSDT"],
        "kafka": {"bootstrap": "kafka:9092"},
        "spark": {"image": "ghcr.io/quantcore/quantcore-spark:0.1.0"},
        **spec,
    }
    return MarketFeed(
        name=name,
        namespace=namespace,
        uid="00000000-0000-0000-0000-000000000000",
        generation=1,
        spec=MarketFeedSpec.model_validate(body),
    )
