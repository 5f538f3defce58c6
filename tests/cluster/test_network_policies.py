"""The chart's NetworkPolicies, enforced on the real node by its policy engine.

Stand-in pods carry the labels and named ports the operator gives a MarketFeed's workloads (and
the chart gives the operator), each answering "ok" on its ports. Every flow is first shown open,
before any policy exists, so a refusal afterwards is the policy's doing and not a broken pod;
then the chart's policies are applied and each flow is allowed or refused as they say.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from quantcore.devcluster import cluster, images, nodeconfig
from tests import chart
from tests.cluster import pods
from tests.fixtures.cluster import api_client, eventually

pytestmark = pytest.mark.cluster

FEED = "np-feed"  # the MarketFeed the stand-ins belong to
RELEASE = "qcnp"
PORTS = {"metrics": 9100, "grpc": 50051, "redis": 6379, "kafka": 9092, "https": 443}
# Each stand-in: extra labels, then the named ports it listens on.
STAND_INS: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "feed": (
        {"quantcore.io/marketfeed": FEED, "app.kubernetes.io/component": "feed"},
        ("metrics",),
    ),
    "stream": (
        {"quantcore.io/marketfeed": FEED, "app.kubernetes.io/component": "stream"},
        ("metrics",),
    ),
    "redis": (
        {"quantcore.io/marketfeed": FEED, "app.kubernetes.io/component": "redis"},
        ("redis",),
    ),
    "serve": (
        {"quantcore.io/marketfeed": FEED, "app.kubernetes.io/component": "serve"},
        ("grpc", "metrics"),
    ),
    "operator": (
        {
            "app.kubernetes.io/name": "quantcore",
            "app.kubernetes.io/instance": RELEASE,
            "app.kubernetes.io/component": "operator",
        },
        ("metrics",),
    ),
    "kafka": ({"app": "kafka-stand-in"}, ("kafka",)),
    # An address in a private range on the exchange's port: what a shard must never reach.
    "inside": ({"app": "inside"}, ("https",)),
    "stranger": ({}, ()),  # a pod without any of the platform's labels
}

# Every flow as (client, server, port name, allowed once the policies hold).
FLOWS = [
    ("serve", "redis", "redis", True),
    ("stream", "redis", "redis", True),
    ("feed", "redis", "redis", False),  # shards have no business with Redis
    ("stranger", "redis", "redis", False),  # nor has an unlabelled pod
    ("feed", "kafka", "kafka", True),
    ("stream", "kafka", "kafka", True),
    ("serve", "kafka", "kafka", False),  # serving reads Redis only
    ("redis", "kafka", "kafka", False),  # Redis has no egress at all
    ("stranger", "serve", "grpc", True),  # the gRPC API is the public face
    ("feed", "serve", "grpc", False),  # ... but not for the shards, whose egress is narrow
    ("operator", "feed", "metrics", True),  # /live during a handover
    ("serve", "feed", "metrics", False),
    ("feed", "inside", "https", False),  # the exchange rule excludes private ranges
    ("stream", "inside", "https", False),  # the stream job has no exchange rule
    ("stranger", "stream", "metrics", True),  # metrics peers: any pod may scrape (Prometheus)
    ("feed", "stream", "metrics", False),  # ... if its own egress lets it: a shard's does not
]

SERVER = """
import socket, sys, threading
def serve(port):
    listener = socket.create_server(("", port))
    while True:
        conn, _ = listener.accept()
        conn.sendall(b"ok")
        conn.close()
ports = [int(p) for p in sys.argv[1:]]
for port in ports:
    threading.Thread(target=serve, args=(port,), daemon=True).start()
print("listening", ports, flush=True)
threading.Event().wait()
"""

# kube-router rejects what no policy allows (ICMP port unreachable), which a client sees as a
# refused connection; each server was shown listening first, so a refusal is the policy's.
PROBE = """
import json, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    with socket.create_connection((host, port), timeout=5) as conn:
        print(json.dumps(conn.recv(2).decode()))
except ConnectionRefusedError:
    print(json.dumps("refused"))
except OSError as error:
    print(json.dumps(f"error: {error!r}"))
"""


@dataclass(frozen=True)
class Ground:
    kubeconfig: Path
    namespace: str
    ips: dict[str, str]

    def connect(self, source: str, target: str, port_name: str) -> str:
        """What `source` gets connecting to `target`'s port: "ok", "refused" or an error."""
        out = pods.kubectl(
            self.kubeconfig,
            "exec",
            "-n",
            self.namespace,
            source,
            "--",
            "python3",
            "-c",
            PROBE,
            self.ips[target],
            str(PORTS[port_name]),
        )
        return str(json.loads(out.strip().splitlines()[-1]))

    def wait_open(self, source: str, target: str, port_name: str) -> None:
        # A server answers once its thread listens, a moment after the pod is Running.
        eventually(
            lambda: self.connect(source, target, port_name) == "ok",
            f"{source} -> {target}:{port_name} open",
            timeout=60,
        )


@pytest.fixture(scope="module")
def api(node_cluster: cluster.Cluster) -> Iterator[client.ApiClient]:
    with api_client(node_cluster.kubeconfig) as api:
        yield api


@pytest.fixture(scope="module")
def ground(
    node_cluster: cluster.Cluster, api: client.ApiClient, built_images: dict[str, images.BuiltImage]
) -> Iterator[Ground]:
    core = client.CoreV1Api(api)
    for namespace in pods.namespace(api, labels={}):
        for name, (labels, port_names) in STAND_INS.items():
            container = pods.container(
                name,
                built_images["runtime"].ref,
                ["python3", "-c", SERVER, *(str(PORTS[p]) for p in port_names)],
            )
            container["ports"] = [
                {"name": p, "containerPort": PORTS[p], "protocol": "TCP"} for p in port_names
            ]
            manifest = pods.pod(name, built_images["runtime"].ref, [])
            manifest["metadata"]["labels"] = labels
            manifest["spec"]["containers"] = [container]
            pods.create(api, namespace, manifest)
        for name in STAND_INS:
            pods.wait_phase(core, namespace, name, "Running")
        ips = {name: _pod_ip(core, namespace, name) for name in STAND_INS}
        yield Ground(node_cluster.kubeconfig, namespace, ips)


def test_each_flow_is_allowed_or_refused_as_the_chart_says(
    node_cluster: cluster.Cluster, api: client.ApiClient, ground: Ground
) -> None:
    # Before any policy: every flow is open, so each refusal below is the policy's alone.
    for source, target, port_name, _ in FLOWS:
        ground.wait_open(source, target, port_name)

    policies = _chart_policies(ground.namespace, node_cluster.kubeconfig)
    assert {p["metadata"]["name"].removeprefix(f"{RELEASE}-quantcore-") for p in policies} >= {
        "default-deny",
        "feed-shard",
        "stream",
        "redis",
        "serving",
        "operator",
    }
    for policy in policies:
        pods.create(api, ground.namespace, policy)
    # kube-router has programmed them once its rules name every policy with rules and every
    # stand-in a policy selects (all but the unlabelled ones).
    selected = ("feed", "stream", "redis", "serve", "operator")
    with_rules = [
        p["metadata"]["name"]
        for p in policies
        if not p["metadata"]["name"].endswith("-default-deny")
    ]
    eventually(
        lambda: _programmed(node_cluster, ground.namespace, selected, with_rules),
        "kube-router enforcing every policy for every selected stand-in",
        timeout=90,
    )

    outcomes = {
        f"{source} -> {target}:{port_name}": ground.connect(source, target, port_name)
        for source, target, port_name, _ in FLOWS
    }
    expected = {
        f"{source} -> {target}:{port_name}": "ok" if allowed else "refused"
        for source, target, port_name, allowed in FLOWS
    }
    assert outcomes == expected


def _chart_policies(namespace: str, kubeconfig: Path) -> list[dict[str, Any]]:
    """The chart's NetworkPolicies for a release in `namespace` whose MarketFeeds live there
    too, with the stand-in broker as the Kafka peer, rendered as an install would be."""
    objects = chart.render(
        {
            "networkPolicies.namespaces": [namespace],
            "networkPolicies.kafka.peers": [
                {"podSelector": {"matchLabels": {"app": "kafka-stand-in"}}}
            ],
        },
        release=RELEASE,
        namespace=namespace,
        kubeconfig=kubeconfig,
    )
    return chart.of_kind(objects, "NetworkPolicy")


def test_the_api_server_rule_names_the_api_servers_own_address(
    node_cluster: cluster.Cluster, ground: Ground
) -> None:
    """Looked up at install: the operator and the Spark driver may reach the API server's
    address and port, not any address on 443."""
    policies = {
        p["metadata"]["name"]: p for p in _chart_policies(ground.namespace, node_cluster.kubeconfig)
    }
    api_rule = {
        "to": [{"ipBlock": {"cidr": f"{nodeconfig.NODE_IP}/32"}}],
        "ports": [{"port": nodeconfig.API_PORT, "protocol": "TCP"}],
    }
    for name in ("operator", "stream"):
        assert api_rule in policies[f"{RELEASE}-quantcore-{name}"]["spec"]["egress"]


def _programmed(
    node_cluster: cluster.Cluster, namespace: str, pods: Sequence[str], policies: Sequence[str]
) -> bool:
    rules = cluster.node_namespace(node_cluster.directory).run(["iptables-save", "-t", "filter"])
    return all(f"POD name:{pod} namespace: {namespace}" in rules for pod in pods) and all(
        policy in rules for policy in policies
    )


def _pod_ip(core: client.CoreV1Api, namespace: str, name: str) -> str:
    found: Any = core.read_namespaced_pod(name, namespace)
    return str(found.status.pod_ip)
