"""Pods for cluster tests on the real node: namespaces that clean up after themselves, pods
and containers that pass the `restricted` Pod Security Standard, waiting on a pod's phase."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kubernetes import client, utils
from kubernetes.client.exceptions import ApiException

from tests.fixtures.cluster import RESTRICTED_CONTAINER, eventually


def create(api: client.ApiClient, namespace: str, manifest: dict[str, Any]) -> None:
    utils.create_from_dict(api, manifest, namespace=namespace)


def namespace(api: client.ApiClient, *, labels: dict[str, str]) -> Iterator[str]:
    core = client.CoreV1Api(api)
    name = f"t-node-{uuid.uuid4().hex[:8]}"
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"quantcore.io/test": "true", **labels})
        )
    )
    eventually(lambda: has_default_account(core, name), f"default account in {name}")
    try:
        yield name
    finally:
        core.delete_namespace(name)


def has_default_account(core: client.CoreV1Api, namespace: str) -> bool:
    try:
        core.read_namespaced_service_account("default", namespace)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def container(name: str, image: str, command: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "Never",  # loaded into the node's runtime; there is no registry
        "command": command,
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
    }


def pod_spec(containers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "containers": containers,
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    }


def pod(name: str, image: str, command: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", **pod_spec([container(name, image, command)])},
    }


def wait_phase(
    core: client.CoreV1Api, namespace: str, name: str, phase: str, timeout: float = 180
) -> None:
    def reached() -> bool:
        pod: Any = core.read_namespaced_pod(name, namespace)
        current = pod.status.phase
        if current == "Failed" and phase != "Failed":
            raise AssertionError(f"pod {name} failed: {describe(core, namespace, name)}")
        return bool(current == phase)

    eventually(reached, f"pod {name} {phase}", timeout=timeout)


def describe(core: client.CoreV1Api, namespace: str, name: str) -> str:
    pod = core.read_namespaced_pod(name, namespace)
    try:
        logs = core.read_namespaced_pod_log(name, namespace)
    except ApiException as error:
        logs = f"(no logs: {error.reason})"
    return f"{pod.status}\nlogs:\n{logs}"


def kubectl(kubeconfig: Path, *args: str) -> str:
    done = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
