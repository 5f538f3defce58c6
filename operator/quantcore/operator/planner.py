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

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quantcore import kafkaacl, kafkaauth, logs, redisacl, redisauth
from quantcore.feedshard import POD_METRICS_PORT, shard_args, shard_environment
from quantcore.lake import log_retention
from quantcore.operator.api import MarketFeed, MarketFeedSpec
from quantcore.routing import CONFIGMAP_KEY, RoutingTable, rebalance

Obj = dict[str, Any]

ROUTING_DIR = "/etc/quantcore/routing"
SERVING_TLS_DIR = "/etc/quantcore/tls"
SERVING_TOKENS_DIR = "/etc/quantcore/tokens"
SERVING_TOKENS_KEY = "tokens"
RUNTIME_GID = 10001  # the runtime image's group (images/Dockerfile.runtime)
METRICS_PORT = POD_METRICS_PORT  # feed shards and serving alike
REDIS_PORT = 6379
# The managed Redis's certificate (a Secret) and the aclfile its init container writes.
REDIS_TLS_DIR = "/etc/redis/tls"
REDIS_ACL_DIR = "/etc/redis/acl"
# Where a Redis client pod finds the CA it trusts (only ca.crt of the TLS Secret is mounted).
REDIS_CA_DIR = "/etc/quantcore/redis-ca"
KAFKA_CA_DIR = "/etc/quantcore/kafka-ca"
# The keys of a `kubernetes.io/basic-auth` Secret: a Kafka role's SCRAM user and password.
KAFKA_USERNAME_KEY, KAFKA_PASSWORD_KEY = "username", "password"
CA_KEY = "ca.crt"  # cert-manager's names for a TLS Secret's keys
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


def redis_host(feed: MarketFeed) -> str:
    """The managed Redis's DNS name: its certificate must name it."""
    return f"{redis_name(feed.name)}.{feed.namespace}.svc"


def redis_url(feed: MarketFeed) -> str:
    if feed.spec.redis.url:
        return feed.spec.redis.url
    scheme = "redis" if feed.spec.redis.insecure else "rediss"
    return f"{scheme}://{redis_host(feed)}:{REDIS_PORT}/0"


def redis_tls_secret_name(feed: MarketFeed) -> str | None:
    """The Secret with Redis's certificate (managed) or the CA to trust (external, optional)."""
    redis = feed.spec.redis
    if redis.insecure:
        return None
    if redis.tls_secret_name or redis.mode == "external":
        return redis.tls_secret_name
    return f"{feed.name}-redis-tls"


def redis_credentials_secret_name(feed: MarketFeed) -> str | None:
    redis = feed.spec.redis
    if redis.insecure:
        return None
    return redis.credentials_secret_name or f"{feed.name}-redis-credentials"


# ---- sizing ---------------------------------------------------------------------------


def input_partitions(spec: MarketFeedSpec, partitions: int) -> int:
    """Kafka partitions the stream job reads: `book`, plus `flow` when trades are on."""
    return partitions * (2 if spec.streams.trades else 1)


def task_slots(spec: MarketFeedSpec, partitions: int) -> int:
    """Task slots the stream job needs: a real-time task holds one per Kafka partition for its
    whole batch, for `book` and, when trades are on, `flow` (the trade-flow query); the
    micro-batch malformed-trade counter then needs one more, free between its batches."""
    slots = partitions * 2 + 1 if spec.streams.trades else partitions
    # The lake's micro-batch writers get a slot of their own (quantcore.stream.job.task_slots).
    return slots + (1 if spec.lake is not None else 0)


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
# The serving pods' copy of the lake files History calls read (a cache: an eviction loses
# nothing but the next read's download).
LAKE_CACHE_DIR = "/var/cache/quantcore/lake"
LAKE_CACHE_SIZE = "2Gi"
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


def log_environment(feed: MarketFeed) -> list[Obj]:
    """How a pod's quantcore process logs (quantcore.logs): the chosen format, and the
    context every record carries; the pod's own name and namespace from the downward API."""

    def field(path: str) -> Obj:
        # With the apiVersion the API server would default: applying without it conflicts.
        return {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}

    return [
        {"name": logs.FORMAT_ENV, "value": feed.spec.monitoring.log_format},
        {"name": logs.MARKETFEED_ENV, "value": feed.name},
        {"name": logs.NAMESPACE_ENV, "valueFrom": field("metadata.namespace")},
        {"name": logs.POD_ENV, "valueFrom": field("metadata.name")},
    ]


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
    env = log_environment(feed)
    env += [{"name": name, "value": value} for name, value in environment.items()]
    # The feed user alone: it may write the feed's topics and nothing else.
    env += kafka_client_env(feed, kafkaacl.FEED)
    ca_volumes, ca_mounts = kafka_ca_volume(feed)
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
                                *ca_mounts,
                            ],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "routing",
                            "configMap": {"name": shard_configmap_name(feed.name, shard)},
                        },
                        _TMP_VOLUME,
                        *ca_volumes,
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


# ---- Kafka clients -------------------------------------------------------------------


def kafka_credentials_secret_name(feed: MarketFeed, role: str) -> str | None:
    """The Secret holding `role`'s SCRAM user (kafkaacl.FEED or STREAM); None: PLAINTEXT."""
    credentials = feed.spec.kafka.credentials
    if feed.spec.kafka.insecure or credentials is None:
        return None
    by_role = {
        kafkaacl.FEED: credentials.feed_secret_name,
        kafkaacl.STREAM: credentials.stream_secret_name,
    }
    return by_role[role]


def kafka_client_env(feed: MarketFeed, role: str) -> list[Obj]:
    """One role's Kafka settings for a client container (quantcore.kafkaauth): SASL_SSL, its
    user and password from its own Secret (never a plain value), where the CA is mounted."""
    secret = kafka_credentials_secret_name(feed, role)
    if secret is None:
        return [{"name": kafkaauth.PROTOCOL_ENV, "value": kafkaauth.PLAINTEXT}]
    env: list[Obj] = [
        {"name": kafkaauth.PROTOCOL_ENV, "value": kafkaauth.SASL_SSL},
        {"name": kafkaauth.MECHANISM_ENV, "value": feed.spec.kafka.sasl_mechanism},
    ]
    for name, key in (
        (kafkaauth.USERNAME_ENV, KAFKA_USERNAME_KEY),
        (kafkaauth.PASSWORD_ENV, KAFKA_PASSWORD_KEY),
    ):
        env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    if feed.spec.kafka.ca_secret_name and not feed.spec.kafka.insecure:
        env.append({"name": kafkaauth.CA_FILE_ENV, "value": f"{KAFKA_CA_DIR}/{CA_KEY}"})
    return env


def kafka_ca_volume(feed: MarketFeed) -> tuple[list[Obj], list[Obj]]:
    """(volumes, mounts) giving a Kafka client the brokers' CA: the Secret's ca.crt alone."""
    secret = feed.spec.kafka.ca_secret_name
    if secret is None or feed.spec.kafka.insecure:
        return [], []
    volume = {
        "name": "kafka-ca",
        "secret": {"secretName": secret, "items": [{"key": CA_KEY, "path": CA_KEY}]},
    }
    return [volume], [{"name": "kafka-ca", "mountPath": KAFKA_CA_DIR, "readOnly": True}]


# ---- Redis clients -------------------------------------------------------------------


def redis_client_env(feed: MarketFeed, user: str) -> list[Obj]:
    """One ACL user's credentials for a Redis client container: its name, its password from
    the credentials Secret (never a plain value) and where the CA is mounted."""
    secret = redis_credentials_secret_name(feed)
    if secret is None:
        return []
    env: list[Obj] = [
        {"name": redisauth.USERNAME_ENV, "value": user},
        {
            "name": redisauth.PASSWORD_ENV,
            "valueFrom": {"secretKeyRef": {"name": secret, "key": redisacl.secret_key(user)}},
        },
    ]
    if redis_tls_secret_name(feed) is not None:
        env.append({"name": redisauth.CA_FILE_ENV, "value": f"{REDIS_CA_DIR}/{CA_KEY}"})
    return env


def redis_ca_volume(feed: MarketFeed) -> tuple[list[Obj], list[Obj]]:
    """(volumes, mounts) giving a client the CA alone: the TLS Secret's ca.crt, never its key."""
    secret = redis_tls_secret_name(feed)
    if secret is None:
        return [], []
    volume = {
        "name": "redis-ca",
        "secret": {"secretName": secret, "items": [{"key": CA_KEY, "path": CA_KEY}]},
    }
    return [volume], [{"name": "redis-ca", "mountPath": REDIS_CA_DIR, "readOnly": True}]


def redis_credentials_secret(feed: MarketFeed, passwords: Mapping[str, str]) -> Obj:
    """The managed Redis's credentials Secret, made once with `passwords` (random, by the
    reconcile) when absent: the operator creates it and never overwrites it."""
    name = redis_credentials_secret_name(feed)
    assert name is not None, "an insecure Redis has no credentials"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(feed, name, "redis"),
        "type": "Opaque",
        "stringData": {
            redisacl.secret_key(user): passwords[user] for user in redisacl.PIPELINE_USERS
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
        # The driver's Python (job, relay) logs through quantcore.logs; Spark's JVM keeps log4j.
        # spec.spark.env comes after, so a variable set there wins.
        "env": log_environment(feed) + [e.to_kubernetes() for e in spark.env],
    }
    volumes: list[Obj] = [_TMP_VOLUME, {"name": "work-dir", "emptyDir": {"sizeLimit": "1Gi"}}]
    # Driver and executors alike: the executors run Spark's Kafka source and sink, and read
    # the CA from the same path the driver names in their options.
    container["env"] += kafka_client_env(feed, kafkaacl.STREAM)
    kafka_volumes, kafka_mounts = kafka_ca_volume(feed)
    volumes += kafka_volumes
    container["volumeMounts"] += kafka_mounts
    if role == "driver":
        # The relay runs in the driver: the relay user's credentials there, nowhere else
        # (spec.spark.env may not name QUANTCORE_REDIS_*, so nothing overrides them).
        container["env"] += redis_client_env(feed, redisacl.RELAY)
        ca_volumes, ca_mounts = redis_ca_volume(feed)
        volumes += ca_volumes
        container["volumeMounts"] += ca_mounts
    pod: Obj = {
        "securityContext": pod_security(),
        "containers": [container],
        # The root filesystem is read-only: Spark writes scratch files under /tmp and
        # executors fetch the application's files into their working directory.
        "volumes": volumes,
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


def lake_sink(feed: MarketFeed) -> str | None:
    """Where the feed's stream job writes its lake tables: one sink per checkpoint
    (quantcore.lake), so a changed spark.checkpoint starts a new one rather than a sink whose
    first batches the new checkpoint's would skip."""
    lake = feed.spec.lake
    if lake is None:
        return None
    checkpoint_id = hashlib.sha256(feed.spec.spark.checkpoint.encode()).hexdigest()[:8]
    return f"{lake.location.rstrip('/')}/{feed.name}-{checkpoint_id}"


def lake_arguments(feed: MarketFeed) -> list[str]:
    sink, lake = lake_sink(feed), feed.spec.lake
    if sink is None or lake is None:
        return []
    args = [
        "--lake",
        sink,
        "--lake-interval",
        f"{lake.interval_seconds} seconds",
        # The log of record, archived beside the signals (the lake's `raw` table).
        "--raw-topic",
        feed.spec.kafka.topics.raw,
    ]
    retention = log_retention(lake.retention_days)
    return args + (["--lake-retention", retention] if retention else [])


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
                *lake_arguments(feed),
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


def redis_tls_args() -> list[str]:
    """redis-server's arguments for TLS only: no plaintext port; clients prove who they are
    with their ACL user's password, the certificate proves the server to them."""
    return [
        "--port", "0",
        "--tls-port", str(REDIS_PORT),
        "--tls-cert-file", f"{REDIS_TLS_DIR}/tls.crt",
        "--tls-key-file", f"{REDIS_TLS_DIR}/tls.key",
        "--tls-ca-cert-file", f"{REDIS_TLS_DIR}/{CA_KEY}",
        "--tls-auth-clients", "no",
        "--aclfile", f"{REDIS_ACL_DIR}/users.acl",
    ]  # fmt: skip


def redis_acl_init_container(feed: MarketFeed, security: Obj) -> Obj:
    """Writes the aclfile (quantcore.redisacl's rules, the Secret's passwords as hashes) into
    the memory volume Redis reads, as Redis's own uid: `quantcore redis-acl`."""
    secret = redis_credentials_secret_name(feed)
    assert secret is not None
    return {
        "name": "acl",
        "image": feed.spec.image,
        "command": ["quantcore"],
        "args": ["redis-acl", "--out", f"{REDIS_ACL_DIR}/users.acl"],
        "env": [
            {
                "name": redisacl.password_env(user),
                "valueFrom": {"secretKeyRef": {"name": secret, "key": redisacl.secret_key(user)}},
            }
            for user in redisacl.PIPELINE_USERS
        ],
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"memory": "128Mi"},
        },
        "securityContext": security,
        "volumeMounts": [{"name": "acl", "mountPath": REDIS_ACL_DIR}, _TMP_MOUNT],
    }


def redis_objects(feed: MarketFeed, symbols: int) -> list[Obj]:
    if feed.spec.redis.mode == "external":
        return []
    name = redis_name(feed.name)
    labels = _selector(feed, "redis")
    mib = redis_memory_mib(symbols, feed.spec.streams.depth.levels)
    security = {**container_security(), "runAsUser": 999, "runAsGroup": 999}
    tls_secret = redis_tls_secret_name(feed)
    # Signals are derived state, rebuilt from Kafka: no persistence.
    args = [
        "--maxmemory", f"{mib}mb",
        "--maxmemory-policy", "noeviction",
        "--save", "",
        "--appendonly", "no",
    ]  # fmt: skip
    mounts: list[Obj] = [{"name": "data", "mountPath": "/data"}, _TMP_MOUNT]
    volumes: list[Obj] = [{"name": "data", "emptyDir": {}}, _TMP_VOLUME]
    pod_spec: Obj = {
        "automountServiceAccountToken": False,
        "securityContext": {**pod_security(), "fsGroup": 999},
    }
    if tls_secret is not None:
        args += redis_tls_args()
        mounts += [
            {"name": "tls", "mountPath": REDIS_TLS_DIR, "readOnly": True},
            {"name": "acl", "mountPath": REDIS_ACL_DIR, "readOnly": True},
        ]
        volumes += [
            # Group-readable for fsGroup 999, the uid Redis runs as.
            {"name": "tls", "secret": {"secretName": tls_secret, "defaultMode": 0o440}},
            # The aclfile holds password hashes: memory only, never on the node's disk.
            {"name": "acl", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        ]
        pod_spec["initContainers"] = [redis_acl_init_container(feed, security)]
    pod_spec["containers"] = [
        {
            "name": "redis",
            "image": feed.spec.redis.image,
            "args": args,
            "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
            "resources": {
                "requests": {"cpu": "100m", "memory": f"{mib}Mi"},
                "limits": {"memory": f"{mib + mib // 2}Mi"},
            },
            # A TCP probe works on the TLS port as on a plaintext one, and needs no password.
            "readinessProbe": {"tcpSocket": {"port": "redis"}},
            "livenessProbe": {
                "tcpSocket": {"port": "redis"},
                "initialDelaySeconds": 10,
                "periodSeconds": 20,
            },
            "securityContext": security,
            "volumeMounts": mounts,
        }
    ]
    pod_spec["volumes"] = volumes
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(feed, name, "redis"),
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
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


def serving_security(feed: MarketFeed) -> tuple[list[str], list[Obj], list[Obj]]:
    """`quantcore serve`'s security flags, and the read-only Secret volumes they read."""
    serving = feed.spec.serving
    args = [
        "--reflection",
        "on" if serving.reflection else "off",
        "--health-port",
        str(serving.health_port),
        "--streams-per-identity",
        str(serving.limits.streams_per_identity),
        "--symbols-per-stream",
        str(serving.limits.symbols_per_stream),
    ]
    mounts: list[Obj] = []
    volumes: list[Obj] = []
    if serving.tls is None:
        return [*args, "--insecure"], mounts, volumes
    # The whole Secret as a directory: a renewal swaps its files, and the server's TLS
    # credentials re-read them (a subPath mount would never see the renewal).
    args += ["--tls-dir", SERVING_TLS_DIR, "--tls-client-auth", serving.tls.client_auth]
    mounts.append({"name": "tls", "mountPath": SERVING_TLS_DIR, "readOnly": True})
    volumes.append(
        {"name": "tls", "secret": {"secretName": serving.tls.secret_name, "defaultMode": 0o440}}
    )
    if serving.auth is not None:
        args += ["--tokens", f"{SERVING_TOKENS_DIR}/{SERVING_TOKENS_KEY}"]
        mounts.append({"name": "tokens", "mountPath": SERVING_TOKENS_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "tokens",
                "secret": {"secretName": serving.auth.tokens_secret, "defaultMode": 0o440},
            }
        )
    return args, mounts, volumes


def serving_lake(feed: MarketFeed) -> tuple[list[str], list[Obj], list[Obj], list[Obj]]:
    """History for the serving pods, given a lake: the whole lake (every sink of the feed's
    location, as `quantcore history` reads one), mirrored into a volume of its own
    (quantcore.lakemirror), read with the S3 settings the stream job writes it with (the AWS_*
    variables of spec.spark.env) or, on EKS, as spec.serving.serviceAccount's IRSA role (see
    serving_objects). Returns (args, env, mounts, volumes)."""
    lake = feed.spec.lake
    if lake is None:
        return [], [], [], []
    env = [e.to_kubernetes() for e in feed.spec.spark.env if e.name.startswith("AWS_")]
    args = ["--lake", lake.location, "--lake-cache", LAKE_CACHE_DIR]
    mount = {"name": "lake-cache", "mountPath": LAKE_CACHE_DIR}
    volume = {"name": "lake-cache", "emptyDir": {"sizeLimit": LAKE_CACHE_SIZE}}
    return args, env, [mount], [volume]


def serving_objects(feed: MarketFeed) -> list[Obj]:
    spec = feed.spec
    name = serve_name(feed.name)
    labels = _selector(feed, "serve")
    port = spec.serving.port
    health_port = spec.serving.health_port
    scaling = spec.serving.autoscaling
    ca_volumes, ca_mounts = redis_ca_volume(feed)
    redis_env = redis_client_env(feed, redisacl.SERVE)
    security_args, security_mounts, security_volumes = serving_security(feed)
    lake_args, lake_env, lake_mounts, lake_volumes = serving_lake(feed)
    pod_spec: Obj = {"automountServiceAccountToken": False}
    if spec.serving.service_account is not None:
        # An account the user made (never created here), e.g. annotated for IRSA. EKS's pod
        # identity webhook follows that annotation, not automount: it adds its own projected
        # token (audience sts.amazonaws.com) and AWS_ROLE_ARN/AWS_WEB_IDENTITY_TOKEN_FILE, so
        # the pods get an AWS identity and still no API server token.
        pod_spec["serviceAccountName"] = spec.serving.service_account
    deployment_spec: Obj = {
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                **pod_spec,
                # The Secret files are 0440, group-owned by fsGroup: the image's group.
                "securityContext": {**pod_security(), "fsGroup": RUNTIME_GID},
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
                            *security_args,
                            *lake_args,
                        ],
                        # The serving user's Redis credentials: reads and PSUBSCRIBE, nothing else.
                        "env": log_environment(feed) + redis_env + lake_env,
                        "ports": [
                            {"name": "grpc", "containerPort": port},
                            {"name": "metrics", "containerPort": METRICS_PORT},
                            {"name": "health", "containerPort": health_port},
                        ],
                        # The kubelet's gRPC probe speaks no TLS: it asks the plaintext
                        # health-only port, which answers as the TLS port's health does.
                        "readinessProbe": {"grpc": {"port": health_port}},
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
                            *security_mounts,
                            _TMP_MOUNT,
                            *ca_mounts,
                            *lake_mounts,
                        ],
                    }
                ],
                "volumes": [
                    {"name": "routing", "configMap": {"name": routing_configmap_name(feed.name)}},
                    *security_volumes,
                    _TMP_VOLUME,
                    *ca_volumes,
                    *lake_volumes,
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
    serving = {"tls": {"secretName": f"{name}-serving-tls"}, **spec.pop("serving", {})}
    if serving.get("insecure"):
        serving.pop("tls")
    kafka = {
        "bootstrap": "kafka:9092",
        "credentials": {
            "feedSecretName": f"{name}-kafka-feed",
            "streamSecretName": f"{name}-kafka-stream",
        },
        "caSecretName": f"{name}-kafka-ca",
        **spec.pop("kafka", {}),
    }
    if kafka.get("insecure"):
        kafka.pop("credentials")
        kafka.pop("caSecretName")
    body = {
        "image": "ghcr.io/quantcore/quantcore:0.1.0",
        "symbols": ["BTCUSDT", "ETHUSDT"],
        "kafka": kafka,
        "spark": {"image": "ghcr.io/quantcore/quantcore-spark:0.1.0"},
        "serving": serving,
        **spec,
    }
    return MarketFeed(
        name=name,
        namespace=namespace,
        uid="00000000-0000-0000-0000-000000000000",
        generation=1,
        spec=MarketFeedSpec.model_validate(body),
    )
