"""Pods really run: the project's images on a real node (kubelet, containerd, runc, CNI,
kube-proxy, CoreDNS) inside the test ground's own network namespace."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client, utils
from kubernetes.client.exceptions import ApiException

from quantcore.devcluster import cluster, images
from tests.fixtures.cluster import api_client

pytestmark = pytest.mark.cluster

T = TypeVar("T")

RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


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


def test_runtime_image_runs_and_its_logs_are_readable(
    node_cluster: cluster.Cluster,
    api: client.ApiClient,
    node_namespace: str,
    built_images: dict[str, images.BuiltImage],
) -> None:
    core = client.CoreV1Api(api)
    _create(api, node_namespace, _pod("cli", built_images["runtime"].ref, ["quantcore", "--help"]))
    _wait_phase(core, node_namespace, "cli", "Succeeded")
    logs = _kubectl(node_cluster.kubeconfig, "logs", "-n", node_namespace, "cli")
    assert "usage: quantcore" in logs


def test_spark_image_runs_spark_submit(
    node_cluster: cluster.Cluster,
    api: client.ApiClient,
    node_namespace: str,
    built_images: dict[str, images.BuiltImage],
) -> None:
    core = client.CoreV1Api(api)
    _create(
        api, node_namespace, _pod("spark", built_images["spark"].ref, ["spark-submit", "--version"])
    )
    _wait_phase(core, node_namespace, "spark", "Succeeded")
    logs = _kubectl(node_cluster.kubeconfig, "logs", "-n", node_namespace, "spark")
    assert "version 4.2.0" in logs


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

    _eventually(available, "Deployment echo Available", timeout=120)
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
    node_cluster: cluster.Cluster,
    api: client.ApiClient,
    node_namespace: str,
    built_images: dict[str, images.BuiltImage],
) -> None:
    core = client.CoreV1Api(api)
    # A documentation address (TEST-NET-3): nothing may answer, and nothing must try to route.
    attempt = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('203.0.113.7', 443), timeout=5)\n"
        "    print('connected')\n"
        "except OSError as error:\n"
        "    print('refused', error.errno)\n"
    )
    _create(
        api,
        node_namespace,
        _pod("offline", built_images["runtime"].ref, ["python3", "-c", attempt]),
    )
    _wait_phase(core, node_namespace, "offline", "Succeeded")
    logs = _kubectl(node_cluster.kubeconfig, "logs", "-n", node_namespace, "offline")
    assert "connected" not in logs
    assert "refused" in logs


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
    _eventually(lambda: _has_default_account(core, name), f"default account in {name}")
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

    _eventually(reached, f"pod {name} {phase}", timeout=timeout)


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


def _eventually(condition: Callable[[], T], what: str, timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)
