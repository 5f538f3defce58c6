"""Pods really run: the project's images on a real node (kubelet, containerd, runc, CNI,
kube-proxy, CoreDNS) inside the test ground's own network namespace."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, utils
from kubernetes.client.exceptions import ApiException

from quantcore.devcluster import cluster, images
from tests.fixtures.cluster import RESTRICTED_CONTAINER, api_client, eventually

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def api(node_cluster: cluster.Cluster) -> Iterator[client.ApiClient]:
    with api_client(node_cluster.kubeconfig) as api:
        yield api


@pytest.fixture
def node_namespace(api: client.ApiClient) -> Iterator[str]:
    yield from _namespace(api, labels={})


@pytest.fixture
def restricted_namespace(api: client.ApiClient) -> Iterator[str]:
    yield from _namespace(
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
    _create(api, node_namespace, _pod(image, built_images[image].ref, command))
    _wait_phase(core, node_namespace, image, "Succeeded")
    assert expected in _kubectl(node_cluster.kubeconfig, "logs", "-n", node_namespace, image)


def test_deployment_becomes_available_and_its_service_resolves_by_name(
    node_cluster: cluster.Cluster,
    api: client.ApiClient,
    node_namespace: str,
    built_images: dict[str, images.BuiltImage],
) -> None:
    apps = client.AppsV1Api(api)
    core = client.CoreV1Api(api)
    labels = {"app": "echo"}
    server = _container(
        "echo",
        built_images["runtime"].ref,
        ["python3", "-m", "http.server", "8080", "--directory", "/opt"],
    )
    server["ports"] = [{"containerPort": 8080, "name": "http"}]
    server["readinessProbe"] = {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
    _create(
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
                    "spec": {**_pod_spec([server])},
                },
            },
        },
    )
    _create(
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
    # Another pod reaches it by the Service's DNS name (CoreDNS, then kube-proxy's rules).
    fetch = (
        "import socket, urllib.request;"
        f"name = 'echo.{node_namespace}.svc.cluster.local';"
        "print('resolved', socket.gethostbyname(name));"
        "print('status', urllib.request.urlopen(f'http://{name}/', timeout=10).status)"
    )
    _create(
        api, node_namespace, _pod("client", built_images["runtime"].ref, ["python3", "-c", fetch])
    )
    _wait_phase(core, node_namespace, "client", "Succeeded")
    logs = _kubectl(node_cluster.kubeconfig, "logs", "-n", node_namespace, "client")
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
    _create(
        api,
        restricted_namespace,
        _pod(
            "runtime",
            built_images["runtime"].ref,
            ["sh", "-c", f'python3 -c "{probe}" 2>&1 | tail -1; quantcore --help'],
        ),
    )
    _create(
        api,
        restricted_namespace,
        _pod("spark", built_images["spark"].ref, ["spark-submit", "--version"]),
    )
    for name in ("runtime", "spark"):
        _wait_phase(core, restricted_namespace, name, "Succeeded")
    logs = _kubectl(node_cluster.kubeconfig, "logs", "-n", restricted_namespace, "runtime")
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


# ---- helpers ----------------------------------------------------------------------------


def _create(api: client.ApiClient, namespace: str, manifest: dict[str, Any]) -> None:
    utils.create_from_dict(api, manifest, namespace=namespace)


def _namespace(api: client.ApiClient, *, labels: dict[str, str]) -> Iterator[str]:
    core = client.CoreV1Api(api)
    name = f"t-node-{uuid.uuid4().hex[:8]}"
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"quantcore.io/test": "true", **labels})
        )
    )
    eventually(lambda: _has_default_account(core, name), f"default account in {name}")
    try:
        yield name
    finally:
        core.delete_namespace(name)


def _has_default_account(core: client.CoreV1Api, namespace: str) -> bool:
    try:
        core.read_namespaced_service_account("default", namespace)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def _container(name: str, image: str, command: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "Never",  # loaded into the node's runtime; there is no registry
        "command": command,
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
    }


def _pod_spec(containers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "containers": containers,
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    }


def _pod(name: str, image: str, command: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", **_pod_spec([_container(name, image, command)])},
    }


def _wait_phase(
    core: client.CoreV1Api, namespace: str, name: str, phase: str, timeout: float = 180
) -> None:
    def reached() -> bool:
        pod: Any = core.read_namespaced_pod(name, namespace)
        current = pod.status.phase
        if current == "Failed" and phase != "Failed":
            raise AssertionError(f"pod {name} failed: {_describe(core, namespace, name)}")
        return bool(current == phase)

    eventually(reached, f"pod {name} {phase}", timeout=timeout)


def _describe(core: client.CoreV1Api, namespace: str, name: str) -> str:
    pod = core.read_namespaced_pod(name, namespace)
    try:
        logs = core.read_namespaced_pod_log(name, namespace)
    except ApiException as error:
        logs = f"(no logs: {error.reason})"
    return f"{pod.status}\nlogs:\n{logs}"


def _kubectl(kubeconfig: Path, *args: str) -> str:
    done = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
