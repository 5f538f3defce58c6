"""What a MarketFeed needs around it on the test ground: a Kafka broker and an exchange.

`deploy` puts them in a namespace of their own (`quantcore-deps`, Pod Security `restricted`):

- Kafka: a StatefulSet of the kafka image (one KRaft broker+controller, the dev services' jars
  and configuration), a headless Service for it and the Service `kafka`, so any namespace
  bootstraps at `kafka.<ns>.svc:9092` (the broker advertises that name). A second listener,
  `HOST`, is advertised as the loopback port of a relay on the host, so clients outside the
  node (tests, benchmarks) produce and consume too.
- the replay server: a Deployment of the runtime image running `quantcore replay --loop
  --symbols N` over the recordings baked into the image, and the Service `replay` with the
  exchange's two ports (`ws` 9443 for ws://.../stream, `rest` 80 for the REST API).
- an S3 API for the stream job's checkpoints: moto's server as a node process at the node
  address (quantcore.devservices.s3), with the bucket `quantcore` and the Service `s3`
  (`http://s3.<ns>.svc:9000`, a selector-less Service whose one endpoint is the node, as
  kube-dns's is), so a MarketFeed names it as it would name any S3-compatible endpoint.

It returns once the Kafka pod is Ready (its probe sends a real Kafka request), an AdminClient
gets metadata through the host relay, and the replay answers exchangeInfo with N symbols.
Every object carries `MANAGED_BY`; a namespace of that name without it is refused, so nothing
quantcore did not create is changed. The cluster's teardown takes it all away with the node.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException
from kubernetes.config import new_client_from_config

from quantcore.devcluster import cluster, nodeconfig
from quantcore.devservices import kafka as devkafka
from quantcore.devservices import s3 as devs3
from quantcore.devservices.ports import is_listening
from quantcore.events import Topics
from quantcore.kafkaauth import KafkaAuth
from quantcore.operator import planner

NAMESPACE = "quantcore-deps"
FIELD_MANAGER = "quantcore-devcluster"
MANAGED_BY = {"app.kubernetes.io/managed-by": "quantcore-devcluster"}
PART_OF = {"app.kubernetes.io/part-of": "quantcore-platform-deps"}
STATE_FILE = "platformdeps.json"

KAFKA = "kafka"
KAFKA_PORT = devkafka.CONTAINER_PORT
KAFKA_HOST_PORT = 9094  # the HOST listener, reached from the host through a relay
# A pod carrying this label ("true") may reach the broker without being a MarketFeed's.
KAFKA_CLIENT_LABEL = "quantcore.io/kafka-client"
KAFKA_SECURITY_DIR = "kafka-security"  # under the cluster's directory: CA, users' passwords
REPLAY = "replay"
REPLAY_PORT = 8080  # the container's: websocket and REST on one port
REPLAY_WS_PORT = 9443  # the Service's, as the exchange's
REPLAY_REST_PORT = 80
DEFAULT_REPLAY_SYMBOLS = 100
S3 = "s3"
S3_BUCKET = "quantcore"
# Memory of the replay grows with its symbols (every copy's lines are held): measured about
# 18 MiB a symbol, plus the interpreter.
REPLAY_MIB_PER_SYMBOL = 20
REPLAY_BASE_MIB = 160

RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


class PlatformDepsError(RuntimeError):
    """The dependencies could not be deployed or did not become ready; the message says why."""


@dataclass(frozen=True)
class PlatformDeps:
    namespace: str
    kafka_bootstrap: str  # inside the cluster
    kafka_host_bootstrap: str  # from the host (127.0.0.1:port, a relay)
    replay_ws_url: str  # inside the cluster
    replay_rest_url: str  # inside the cluster
    replay_host_url: str  # from the host (REST and websocket)
    replay_symbols: int
    s3_endpoint: str = ""  # inside the cluster
    s3_host_endpoint: str = ""  # from the host (a relay)
    s3_bucket: str = ""
    kafka_security: str = ""  # the directory of the broker's CA and users' passwords

    def kafka_auth(self, user: str) -> KafkaAuth:
        """`user`'s SCRAM credentials and the broker's CA (quantcore.kafkaacl's users)."""
        return devkafka.stored_auth(Path(self.kafka_security), user)

    def kafka_host_config(self, user: str = "admin") -> dict[str, Any]:
        """A confluent-kafka config reaching the broker from the host as `user`."""
        return {
            **self.kafka_auth(user).client_config(),
            "bootstrap.servers": self.kafka_host_bootstrap,
        }


# ---- pure: the objects -------------------------------------------------------------------


KAFKA_JVM_MEMORY = (
    "-Xmx512m -Xms512m -XX:MaxDirectMemorySize=192m -Djdk.nio.maxCachedBufferSize=262144"
)


def _meta(name: str, namespace: str | None, component: str | None = None) -> dict[str, Any]:
    labels = {**MANAGED_BY, **PART_OF}
    if component:
        labels["app.kubernetes.io/name"] = component
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if namespace:
        meta["namespace"] = namespace
    return meta


def kafka_bootstrap(namespace: str) -> str:
    return f"{KAFKA}.{namespace}.svc:{KAFKA_PORT}"


def kafka_properties(namespace: str, host_bootstrap: str, admin_password: str) -> str:
    """The broker's server.properties: advertised by its Service's name inside the cluster
    and as the host relay's address on the HOST listener, both SASL_SSL with SCRAM users and
    ACLs enforced (quantcore.devservices.kafka.container_properties)."""
    return devkafka.container_properties(
        f"{KAFKA}.{namespace}.svc.cluster.local:{KAFKA_PORT}",
        {"HOST": (KAFKA_HOST_PORT, host_bootstrap)},
        admin_password=admin_password,
    )


def kafka_server_names(namespace: str) -> list[str]:
    """What the broker's certificate names: its Service (short and full) for pods, and
    127.0.0.1, where the host relay advertises it."""
    return [
        f"{KAFKA}.{namespace}.svc.cluster.local",
        f"{KAFKA}.{namespace}.svc",
        "127.0.0.1",
        "localhost",
    ]


def kafka_security(directory: Path, namespace: str) -> devkafka.KafkaSecurity:
    """The test ground broker's CA, certificate and SCRAM users' passwords, kept under the
    cluster's directory (`kafka-security/`, passwords 0600) and made once: a redeploy keeps
    them, so the Secrets already handed to MarketFeeds stay valid."""
    where = directory / KAFKA_SECURITY_DIR
    return devkafka.load_security(where) or devkafka.create_security(
        where, devkafka.ALL_USERS, kafka_server_names(namespace)
    )


def namespace_manifest(namespace: str) -> dict[str, Any]:
    meta = _meta(namespace, None)
    meta["labels"].update(
        {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }
    )
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def service_manifests(namespace: str) -> list[dict[str, Any]]:
    kafka_selector = {"app.kubernetes.io/name": KAFKA, **PART_OF}
    replay_selector = {"app.kubernetes.io/name": REPLAY, **PART_OF}
    kafka_ports = [
        {"name": "kafka", "port": KAFKA_PORT, "targetPort": "kafka"},
        {"name": "host", "port": KAFKA_HOST_PORT, "targetPort": "host"},
    ]
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(f"{KAFKA}-headless", namespace, KAFKA),
            # The StatefulSet's governing Service: a stable name for the pod.
            "spec": {"clusterIP": "None", "selector": kafka_selector, "ports": kafka_ports},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(KAFKA, namespace, KAFKA),
            "spec": {"selector": kafka_selector, "ports": kafka_ports},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(REPLAY, namespace, REPLAY),
            "spec": {
                "selector": replay_selector,
                "ports": [
                    {"name": "ws", "port": REPLAY_WS_PORT, "targetPort": "http"},
                    {"name": "rest", "port": REPLAY_REST_PORT, "targetPort": "http"},
                ],
            },
        },
    ]


def s3_manifests(namespace: str) -> list[dict[str, Any]]:
    """The Service `s3` and its one endpoint, the S3 server on the node (no pod selects it)."""
    port = {"name": "http", "port": devs3.NODE_PORT, "protocol": "TCP"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(S3, namespace, S3),
        "spec": {"ports": [{**port, "targetPort": devs3.NODE_PORT}]},
    }
    slice_meta = _meta(f"{S3}-node", namespace, S3)
    slice_meta["labels"].update(
        {
            "kubernetes.io/service-name": S3,
            "endpointslice.kubernetes.io/managed-by": "devcluster.quantcore.io",
        }
    )
    endpoints = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": slice_meta,
        "addressType": "IPv4",
        "endpoints": [{"addresses": [nodeconfig.NODE_IP], "conditions": {"ready": True}}],
        "ports": [port],
    }
    return [service, endpoints]


def _node_s3(directory: Path, before: PlatformDeps | None) -> str:
    """The host endpoint of the node's S3 server: the recorded one while it answers, else a
    new server (a second `up` on the same node reuses the first's)."""
    if before and before.s3_host_endpoint and devs3.answers(before.s3_host_endpoint):
        return before.s3_host_endpoint
    return devs3.start_in_node(directory, bucket=S3_BUCKET).host_endpoint


def _pod_security(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _secret(
    name: str, namespace: str, data: dict[str, str], kind: str = "Opaque"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(name, namespace, KAFKA),
        "type": kind,
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


def kafka_manifests(
    namespace: str, image: str, properties: str, security: devkafka.KafkaSecurity
) -> list[dict[str, Any]]:
    """The broker: its server.properties (a Secret: it holds the broker's own SCRAM password),
    its TLS files and its users' passwords (Secrets the entrypoint reads), the StatefulSet."""
    labels = {**MANAGED_BY, **PART_OF, "app.kubernetes.io/name": KAFKA}
    tls = {
        "keystore.pem": security.keystore.read_text(),
        "ca.crt": security.tls.ca.read_text(),
    }
    inputs = [
        properties,
        *tls.values(),
        *(f"{u}={p}" for u, p in sorted(security.passwords.items())),
    ]
    config_hash = hashlib.sha256("\0".join(inputs).encode()).hexdigest()[:16]
    container = {
        "name": KAFKA,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [
            {"name": "kafka", "containerPort": KAFKA_PORT},
            {"name": "host", "containerPort": KAFKA_HOST_PORT},
        ],
        "env": [
            {"name": "KAFKA_CONFIG", "value": "/etc/quantcore-kafka/server.properties"},
            {"name": "KAFKA_USERS_DIR", "value": str(devkafka.CONTAINER_USERS_DIR)},
            # The JVM's memory held under the pod's limit: the heap, and the direct buffers
            # (by default as large as the heap) that NIO caches per thread at the size of the
            # largest read or write it made (fetches of megabytes, through TLS). Uncapped, the
            # broker of the cluster e2e (100 symbols) was OOM-killed at its 1 GiB limit.
            {"name": "KAFKA_HEAP_OPTS", "value": KAFKA_JVM_MEMORY},
        ],
        # A real Kafka request (ApiVersions) answered without error, on the pod's loopback
        # listener: the client ports speak TLS and SASL first.
        "readinessProbe": {
            "exec": {"command": ["/opt/kafka/probe.sh", str(devkafka.CONTAINER_PROBE_PORT)]},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "tcpSocket": {"port": "kafka"},
            "initialDelaySeconds": 60,
            "periodSeconds": 20,
        },
        "resources": {"requests": {"cpu": "100m", "memory": "768Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": RESTRICTED,
        "volumeMounts": [
            {"name": "data", "mountPath": "/var/lib/kafka"},
            {"name": "config", "mountPath": "/etc/quantcore-kafka", "readOnly": True},
            {"name": "tls", "mountPath": str(devkafka.CONTAINER_TLS_DIR), "readOnly": True},
            {"name": "users", "mountPath": str(devkafka.CONTAINER_USERS_DIR), "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    return [
        _secret(f"{KAFKA}-config", namespace, {"server.properties": properties}),
        _secret(f"{KAFKA}-tls", namespace, tls),
        _secret(f"{KAFKA}-users", namespace, dict(security.passwords)),
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": _meta(KAFKA, namespace, KAFKA),
            "spec": {
                "serviceName": f"{KAFKA}-headless",
                "replicas": 1,
                "selector": {"matchLabels": {"app.kubernetes.io/name": KAFKA, **PART_OF}},
                "template": {
                    "metadata": {
                        "labels": labels,
                        # A new configuration (another host relay) restarts the broker.
                        "annotations": {"quantcore.io/config-hash": config_hash},
                    },
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": _pod_security(10002),
                        "terminationGracePeriodSeconds": 30,
                        "containers": [container],
                        # The test ground has no storage provisioner: data lives as long as
                        # the pod (a new pod formats a new log directory).
                        "volumes": [
                            {"name": "data", "emptyDir": {}},
                            _secret_volume("config", f"{KAFKA}-config"),
                            _secret_volume("tls", f"{KAFKA}-tls"),
                            _secret_volume("users", f"{KAFKA}-users"),
                            {"name": "tmp", "emptyDir": {}},
                        ],
                    },
                },
            },
        },
    ]


def kafka_network_policy(namespace: str) -> dict[str, Any]:
    """Who may reach the broker's client port, as a Kafka operator's listener peers would say:
    a MarketFeed's pods, QuantCore's operator, and pods labelled as Kafka tools
    (KAFKA_CLIENT_LABEL), from any namespace. The host relay's port needs no rule: it comes
    from the node, which the policy engine lets reach every pod (probes come that way too)."""
    anywhere: dict[str, Any] = {}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(f"{KAFKA}-clients", namespace, KAFKA),
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": KAFKA, **PART_OF}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": anywhere,
                            "podSelector": {
                                "matchExpressions": [
                                    {"key": planner.FEED_LABEL, "operator": "Exists"}
                                ]
                            },
                        },
                        {
                            "namespaceSelector": anywhere,
                            "podSelector": {
                                "matchLabels": {
                                    "app.kubernetes.io/name": "quantcore",
                                    planner.COMPONENT_LABEL: "operator",
                                }
                            },
                        },
                        {
                            "namespaceSelector": anywhere,
                            "podSelector": {"matchLabels": {KAFKA_CLIENT_LABEL: "true"}},
                        },
                    ],
                    "ports": [{"port": "kafka", "protocol": "TCP"}],
                }
            ],
        },
    }


def _secret_volume(name: str, secret: str) -> dict[str, Any]:
    # Readable by the broker's group (fsGroup) only.
    return {"name": name, "secret": {"secretName": secret, "defaultMode": 0o440}}


def replay_manifests(namespace: str, image: str, symbols: int) -> list[dict[str, Any]]:
    labels = {**MANAGED_BY, **PART_OF, "app.kubernetes.io/name": REPLAY}
    mib = REPLAY_BASE_MIB + REPLAY_MIB_PER_SYMBOL * symbols
    container = {
        "name": REPLAY,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["quantcore"],
        # No files: the recordings baked into the image ($QUANTCORE_RECORDINGS).
        "args": [
            *("replay", "--host", "0.0.0.0", "--port", str(REPLAY_PORT)),
            *("--loop", "--symbols", str(symbols)),
        ],
        "ports": [{"name": "http", "containerPort": REPLAY_PORT}],
        "readinessProbe": {
            "httpGet": {"path": "/api/v3/exchangeInfo", "port": "http"},
            "periodSeconds": 2,
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": f"{mib}Mi"},
            "limits": {"memory": f"{mib + mib // 2}Mi"},
        },
        "securityContext": RESTRICTED,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(REPLAY, namespace, REPLAY),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app.kubernetes.io/name": REPLAY, **PART_OF}},
                # One replay at a time: two would serve different timelines under one name.
                "strategy": {"type": "Recreate"},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": _pod_security(10001),
                        "containers": [container],
                        "volumes": [{"name": "tmp", "emptyDir": {}}],
                    },
                },
            },
        }
    ]


def is_managed(labels: dict[str, str] | None) -> bool:
    return all((labels or {}).get(k) == v for k, v in MANAGED_BY.items())


# ---- I/O: applying and waiting -----------------------------------------------------------


def recorded(directory: Path) -> PlatformDeps | None:
    """What the last `deploy` into the cluster at `directory` returned, if it did."""
    path = directory / STATE_FILE
    if not path.exists():
        return None
    return PlatformDeps(**json.loads(path.read_text()))


def deploy(
    running: cluster.Cluster,
    *,
    kafka_image: str,
    runtime_image: str,
    replay_symbols: int = DEFAULT_REPLAY_SYMBOLS,
    namespace: str = NAMESPACE,
    timeout: float = 300.0,
    log: Callable[[str], None] = lambda _: None,
) -> PlatformDeps:
    """Applies Kafka and the replay server into `namespace` of `running` and waits until both
    answer; idempotent (a second call reuses the host relays it recorded)."""
    if replay_symbols < 1:
        raise PlatformDepsError(f"the replay needs at least 1 symbol, got {replay_symbols}")
    with new_client_from_config(config_file=str(running.kubeconfig)) as api:
        core = client.CoreV1Api(api)
        _check_namespace_is_ours(core, namespace)
        apply = _applier(api)
        apply(namespace_manifest(namespace))
        for service in service_manifests(namespace):
            apply(service)
        before = recorded(running.directory)
        kafka_ip = _cluster_ip(core, namespace, KAFKA)
        replay_ip = _cluster_ip(core, namespace, REPLAY)
        kafka_host = _relay(
            running.directory,
            before.kafka_host_bootstrap if before else None,
            f"{kafka_ip}:{KAFKA_HOST_PORT}",
            "kafka",
        )
        replay_host = _relay(
            running.directory,
            before.replay_host_url.removeprefix("http://") if before else None,
            f"{replay_ip}:{REPLAY_REST_PORT}",
            "replay",
        )
        security = kafka_security(running.directory, namespace)
        properties = kafka_properties(namespace, kafka_host, security.passwords["admin"])
        for manifest in kafka_manifests(namespace, kafka_image, properties, security):
            apply(manifest)
        apply(kafka_network_policy(namespace))
        for manifest in replay_manifests(namespace, runtime_image, replay_symbols):
            apply(manifest)
        for manifest in s3_manifests(namespace):
            apply(manifest)
        s3_host = _node_s3(running.directory, before)
        devs3.create_bucket(s3_host, S3_BUCKET)
        deps = PlatformDeps(
            namespace=namespace,
            kafka_bootstrap=kafka_bootstrap(namespace),
            kafka_host_bootstrap=kafka_host,
            replay_ws_url=f"ws://{REPLAY}.{namespace}.svc:{REPLAY_WS_PORT}/stream",
            replay_rest_url=f"http://{REPLAY}.{namespace}.svc:{REPLAY_REST_PORT}",
            replay_host_url=f"http://{replay_host}",
            replay_symbols=replay_symbols,
            s3_endpoint=f"http://{S3}.{namespace}.svc:{devs3.NODE_PORT}",
            s3_host_endpoint=s3_host,
            s3_bucket=S3_BUCKET,
            kafka_security=str(running.directory / KAFKA_SECURITY_DIR),
        )
        (running.directory / STATE_FILE).write_text(json.dumps(asdict(deps), indent=2))
        started = time.monotonic()
        apps = client.AppsV1Api(api)
        _wait(
            lambda: _statefulset_ready(apps, namespace, KAFKA),
            f"the Kafka pod in {namespace} Ready",
            timeout,
            lambda: _pod_report(core, namespace, KAFKA),
        )
        _wait(
            lambda: devkafka.broker_answers(kafka_host, deps.kafka_auth("admin")),
            f"Kafka metadata through {kafka_host}",
            timeout - (time.monotonic() - started),
            lambda: _pod_report(core, namespace, KAFKA),
        )
        log(f"kafka ready in {time.monotonic() - started:.1f}s ({deps.kafka_bootstrap})")
        _wait(
            lambda: replay_symbols_served(deps.replay_host_url) == replay_symbols,
            f"the replay serving {replay_symbols} symbols",
            timeout - (time.monotonic() - started),
            lambda: _pod_report(core, namespace, REPLAY),
        )
        log(f"replay ready in {time.monotonic() - started:.1f}s ({deps.replay_rest_url})")
    return deps


def _basic_auth(deps: PlatformDeps, user: str) -> dict[str, str]:
    auth = deps.kafka_auth(user)
    if auth.username is None or auth.password is None:
        raise PlatformDepsError(f"the test ground's Kafka has no password for {user}")
    return {"username": auth.username, "password": auth.password}


def kafka_client_secrets(deps: PlatformDeps, namespace: str, prefix: str) -> list[dict[str, Any]]:
    """What a MarketFeed in `namespace` names in spec.kafka: `<prefix>-kafka-feed` and
    `<prefix>-kafka-stream` (kubernetes.io/basic-auth: the feed and stream users) and
    `<prefix>-kafka-ca` (the broker's ca.crt). Apply them, then `grant_kafka` its topics."""
    secrets = []
    for user in ("feed", "stream"):
        secret = _secret(
            f"{prefix}-kafka-{user}", namespace, _basic_auth(deps, user), "kubernetes.io/basic-auth"
        )
        secrets.append(secret)
    secrets.append(kafka_ca_secret(deps, namespace, f"{prefix}-kafka-ca"))
    for secret in secrets:
        secret["metadata"]["labels"] = {**MANAGED_BY, **PART_OF}
    return secrets


def kafka_ca_secret(deps: PlatformDeps, namespace: str, name: str) -> dict[str, Any]:
    """The broker's CA as a Secret in cert-manager's layout (its `ca.crt` alone)."""
    ca = Path(deps.kafka_auth("feed").ca_file or "").read_text()
    secret = _secret(name, namespace, {"ca.crt": ca})
    secret["metadata"]["labels"] = {**MANAGED_BY, **PART_OF}
    return secret


def kafka_operator_secret(deps: PlatformDeps, namespace: str, name: str) -> dict[str, Any]:
    """The operator's Kafka user as the chart takes it (`operator.kafka.credentialsSecretName`,
    basic-auth; the CA from a `kafka_client_secrets` CA Secret)."""
    secret = _secret(name, namespace, _basic_auth(deps, "operator"), "kubernetes.io/basic-auth")
    secret["metadata"]["labels"] = {**MANAGED_BY, **PART_OF}
    return secret


def grant_kafka(deps: PlatformDeps, topics: Topics) -> None:
    """Create the ACLs of one feed's users (quantcore.kafkaacl) for `topics`, as admin through
    the host relay: what a cluster's Kafka administrator does for each new MarketFeed."""
    from quantcore import kafkaacl

    devkafka.create_acls(deps.kafka_host_bootstrap, deps.kafka_auth("admin"), kafkaacl.acls(topics))


def replay_symbols_served(rest_url: str) -> int | None:
    """How many symbols the replay at `rest_url` lists in exchangeInfo (None: no answer)."""
    try:
        with urllib.request.urlopen(f"{rest_url}/api/v3/exchangeInfo", timeout=5) as response:
            return len(json.loads(response.read())["symbols"])
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return None


def _check_namespace_is_ours(core: client.CoreV1Api, namespace: str) -> None:
    try:
        found: Any = core.read_namespace(namespace)
    except ApiException as error:
        if error.status == 404:
            return
        raise
    if not is_managed(found.metadata.labels):
        raise PlatformDepsError(
            f"namespace {namespace} exists and quantcore did not create it (no "
            f"{next(iter(MANAGED_BY))} label); nothing was changed. Choose another namespace."
        )


def _applier(api: client.ApiClient) -> Callable[[dict[str, Any]], None]:
    resources = dynamic.DynamicClient(api).resources

    def apply(manifest: dict[str, Any]) -> None:
        kind = resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
        kind.server_side_apply(
            body=manifest,
            namespace=manifest["metadata"].get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )

    return apply


def _cluster_ip(core: client.CoreV1Api, namespace: str, name: str) -> str:
    service: Any = core.read_namespaced_service(name, namespace)
    return str(service.spec.cluster_ip)


def _relay(directory: Path, previous: str | None, target: str, name: str) -> str:
    """host:port of a loopback relay to `target`: the one recorded if it still listens."""
    if previous:
        host, _, port = previous.rpartition(":")
        if is_listening(int(port), host):
            return previous
    return f"127.0.0.1:{cluster.forward(directory, target, f'deps-{name}')}"


def _statefulset_ready(apps: client.AppsV1Api, namespace: str, name: str) -> bool:
    found: Any = apps.read_namespaced_stateful_set_status(name, namespace)
    status = found.status
    return bool(
        status.ready_replicas == 1
        and status.updated_replicas == 1
        and status.current_revision == status.update_revision
    )


def _pod_report(core: client.CoreV1Api, namespace: str, component: str) -> str:
    pods: Any = core.list_namespaced_pod(
        namespace, label_selector=f"app.kubernetes.io/name={component}"
    )
    lines = []
    for pod in pods.items:
        statuses = pod.status.container_statuses or []
        lines.append(f"pod {pod.metadata.name}: {pod.status.phase}, {statuses}")
        try:
            logs = core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=30)
        except ApiException as error:
            logs = f"(no logs: {error.reason})"
        lines.append(logs or "(no output)")  # an empty log reads as None
    return "\n".join(lines) or f"no {component} pod in {namespace}"


def _wait(probe: Callable[[], bool], what: str, timeout: float, report: Callable[[], str]) -> None:
    deadline = time.monotonic() + max(timeout, 0.0)
    while not probe():
        if time.monotonic() > deadline:
            raise PlatformDepsError(f"timed out waiting for {what}\n{report()}")
        time.sleep(0.5)
