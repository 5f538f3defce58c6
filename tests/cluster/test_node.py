"""Pods really run: the project's images on a real node (kubelet, containerd, runc, CNI,
kube-proxy, CoreDNS) inside the test ground's own network namespace."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from quantcore.devcluster import cluster, images
from tests.cluster import pods
from tests.fixtures.cluster import api_client, eventually

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def api(node_cluster: cluster.Cluster) -> Iterator[client.ApiClient]:
    with api_client(node_cluster.kubeconfig) as api:
        yield api


@pytest.fixture
def node_namespace(api: client.ApiClient) -> Iterator[str]:
    yield from pods.namespace(api, labels={})


@pytest.fixture
def restricted_namespace(api: client.ApiClient) -> Iterator[str]:
    yield from pods.namespace(
        api,
        labels={
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        },
    )


@pytest.mark.parametrize(
    ("image", "command", "expected"),
    [
        ("runtime", ["quantcore", "--help"], "usage: quantcore"),
        ("spark", ["spark-submit", "--version"], "version 4.2.0"),
    ],
)
def test_image_runs_and_its_logs_are_readable(
    node_cluster: cluster.Cluster,
    api: client.ApiClient,
    node_namespace: str,
    built_images: dict[str, images.BuiltImage],
    image: str,
    command: list[str],
    expected: str,
) -> None:
    core = client.CoreV1Api(api)
    pods.create(api, node_namespace, pods.pod(image, built_images[image].ref, command))
    pods.wait_phase(core, node_namespace, image, "Succeeded")
    assert expected in pods.kubectl(node_cluster.kubeconfig, "logs", "-n", node_namespace, image)


def test_deployment_becomes_available_and_its_service_resolves_by_name(
    node_cluster: cluster.Cluster,
    api: client.ApiClient,
    node_namespace: str,
    built_images: dict[str, images.BuiltImage],
) -> None:
    apps = client.AppsV1Api(api)
    core = client.CoreV1Api(api)
    labels = {"app": "echo"}
    server = pods.container(
        "echo",
        built_images["runtime"].ref,
        ["python3", "-m", "http.server", "8080", "--directory", "/opt"],
    )
    server["ports"] = [{"containerPort": 8080, "name": "http"}]
    server["readinessProbe"] = {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
    pods.create(
        api,
        node_namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "echo"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {**pods.pod_spec([server])},
                },
            },
        },
    )
    pods.create(
        api,
        node_namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "echo"},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    )

    def available() -> bool:
        status: Any = apps.read_namespaced_deployment_status("echo", node_namespace).status
        conditions = {c.type: c.status for c in status.conditions or []}
        return conditions.get("Available") == "True" and status.available_replicas == 1

    eventually(available, "Deployment echo Available", timeout=120)
    discovery = client.DiscoveryV1Api(api)

    def endpoint_ready() -> bool:
        slices = discovery.list_namespaced_endpoint_slice(
            node_namespace, label_selector="kubernetes.io/service-name=echo"
        ).items
        return any(e.conditions and e.conditions.ready for s in slices for e in s.endpoints or [])

    eventually(endpoint_ready, "Service echo has a ready endpoint", timeout=60)
    # Another pod reaches it by the Service's DNS name (CoreDNS, then kube-proxy's rules).
    # kube-proxy programs the endpoint a moment after the API lists it; until then the
    # ClusterIP refuses, so the client waits on the Service answering, not on a sleep.
    fetch = f"""
import socket, time, urllib.error, urllib.request
name = 'echo.{node_namespace}.svc.cluster.local'
print('resolved', socket.gethostbyname(name))
deadline = time.monotonic() + 60
while True:
    try:
        print('status', urllib.request.urlopen(f'http://{{name}}/', timeout=10).status)
        break
    except urllib.error.URLError as error:
        if not isinstance(error.reason, ConnectionRefusedError) or time.monotonic() > deadline:
            raise
        print('refused, kube-proxy has not programmed the endpoint yet')
        time.sleep(0.2)
"""
    pods.create(
        api,
        node_namespace,
        pods.pod("client", built_images["runtime"].ref, ["python3", "-c", fetch]),
    )
    pods.wait_phase(core, node_namespace, "client", "Succeeded")
    logs = pods.kubectl(node_cluster.kubeconfig, "logs", "-n", node_namespace, "client")
    service: Any = core.read_namespaced_service("echo", node_namespace)
    service_ip = service.spec.cluster_ip
    assert f"resolved {service_ip}" in logs
    assert "status 200" in logs


def test_restricted_namespace_admits_both_images_read_only(
    node_cluster: cluster.Cluster,
    api: client.ApiClient,
    restricted_namespace: str,
    built_images: dict[str, images.BuiltImage],
) -> None:
    core = client.CoreV1Api(api)
    probe = "import pathlib; pathlib.Path('/opt/x').write_text('x')"
    pods.create(
        api,
        restricted_namespace,
        pods.pod(
            "runtime",
            built_images["runtime"].ref,
            ["sh", "-c", f'python3 -c "{probe}" 2>&1 | tail -1; quantcore --help'],
        ),
    )
    pods.create(
        api,
        restricted_namespace,
        pods.pod("spark", built_images["spark"].ref, ["spark-submit", "--version"]),
    )
    for name in ("runtime", "spark"):
        pods.wait_phase(core, restricted_namespace, name, "Succeeded")
    logs = pods.kubectl(node_cluster.kubeconfig, "logs", "-n", restricted_namespace, "runtime")
    assert "Read-only file system" in logs  # the root filesystem really is read-only
    assert "usage: quantcore" in logs


def test_pods_have_no_route_off_the_machine(
    node_cluster: cluster.Cluster, api: client.ApiClient, node_namespace: str
) -> None:
    """A pod's default route leads to the node's bridge, and the node's namespace has no route
    beyond its own networks: asked by route lookups, so no packet is ever sent outward."""
    namespace = cluster.node_namespace(node_cluster.directory)
    outside = subprocess.run(
        namespace.enter(["ip", "route", "get", "203.0.113.7"]),  # TEST-NET-3
        capture_output=True,
        text=True,
        check=False,
    )
    assert outside.returncode != 0
    assert "unreachable" in outside.stderr
    routes = namespace.run(["ip", "route", "show", "table", "all"])
    assert "default" not in routes
    # Inside the node, what pods and Services use is routed.
    for inside in ("10.214.0.5", "10.96.0.10"):
        namespace.run(["ip", "route", "get", inside])
