"""The test ground itself: a real API server, controller-manager, the third-party CRDs, kubectl
and helm working against it. Other suites build on these guarantees."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, dynamic, watch
from kubernetes.client.exceptions import ApiException

from quantcore.devcluster import versions
from tests.fixtures.cluster import api_client

pytestmark = pytest.mark.cluster

GROUP = "test.quantcore.io"
WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size", "maxSize"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 0},
                                    "maxSize": {"type": "integer"},
                                    "colour": {"type": "string"},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.size <= self.maxSize",
                                        "message": "size exceeds maxSize",
                                    }
                                ],
                            },
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def api(kubeconfig: Path) -> Iterator[client.ApiClient]:
    with api_client(kubeconfig) as api:
        yield api


@pytest.fixture(scope="module")
def widgets(api: client.ApiClient) -> Any:
    """The Widget CRD, installed with server-side apply; returns its dynamic resource."""
    dyn = dynamic.DynamicClient(api)
    crd_api = dyn.resources.get(
        api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
    )
    crd_api.server_side_apply(body=WIDGET_CRD, field_manager="test", force_conflicts=True)
    _eventually(
        lambda: _established(crd_api.get(name=f"widgets.{GROUP}").to_dict()),
        "Widget CRD Established",
    )
    dyn.resources.invalidate_cache()
    return _eventually(
        lambda: dyn.resources.get(api_version=f"{GROUP}/v1", kind="Widget"), "Widget discovery"
    )


def test_server_is_ready_and_reports_the_pinned_version(
    kubeconfig: Path, api: client.ApiClient
) -> None:
    readyz = _kubectl(kubeconfig, "get", "--raw", "/readyz")
    assert readyz.strip() == "ok"
    assert client.VersionApi(api).get_code().git_version == versions.KUBERNETES


def test_custom_resource_create_watch_apply_delete(widgets: Any, namespace: str) -> None:
    start = widgets.get(namespace=namespace).metadata.resourceVersion
    widgets.create(
        namespace=namespace,
        body={
            "apiVersion": f"{GROUP}/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 1, "maxSize": 3},
        },
    )
    applied = widgets.server_side_apply(
        namespace=namespace,
        name="w1",
        body={
            "apiVersion": f"{GROUP}/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 2, "maxSize": 3, "colour": "red"},
        },
        field_manager="painter",
        force_conflicts=True,
    )
    assert applied.spec.size == 2
    assert applied.spec.colour == "red"
    managers = {entry.manager for entry in applied.metadata.managedFields}
    assert "painter" in managers
    widgets.delete(namespace=namespace, name="w1")

    # Replay every change since `start` from the server's watch.
    seen: list[tuple[str, int | None]] = []
    stream = watch.Watch()
    for event in widgets.watch(
        namespace=namespace, resource_version=start, timeout=10, watcher=stream
    ):
        obj = event["raw_object"]
        seen.append((event["type"], obj["spec"].get("size")))
        if event["type"] == "DELETED":
            stream.stop()
    assert seen == [("ADDED", 1), ("MODIFIED", 2), ("DELETED", 2)]


def test_cel_validation_rejects_an_invalid_custom_resource(widgets: Any, namespace: str) -> None:
    with pytest.raises(ApiException) as rejected:
        widgets.create(
            namespace=namespace,
            body={
                "apiVersion": f"{GROUP}/v1",
                "kind": "Widget",
                "metadata": {"name": "too-big"},
                "spec": {"size": 5, "maxSize": 3},
            },
        )
    assert rejected.value.status == 422
    assert "size exceeds maxSize" in str(rejected.value.body)


def test_deleting_an_owner_garbage_collects_its_children(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    assert owner.metadata is not None
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name="child",
                owner_references=[
                    client.V1OwnerReference(
                        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
                    )
                ],
            )
        ),
    )
    core.delete_namespaced_config_map("owner", namespace)  # background propagation
    _eventually(
        lambda: _gone(lambda: core.read_namespaced_config_map("child", namespace)), "child GC"
    )


def test_deployment_controllers_run_and_pods_stay_pending(
    api: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    labels = {"app": "pause"}
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="pause"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[
                            client.V1Container(name="pause", image="registry.k8s.io/pause:3.10")
                        ]
                    ),
                ),
            ),
        ),
    )
    # The deployment controller makes a ReplicaSet, the replicaset controller its pods.
    replica_sets = _eventually(
        lambda: apps.list_namespaced_replica_set(namespace).items or None, "ReplicaSet created"
    )
    assert replica_sets[0].metadata.owner_references[0].kind == "Deployment"
    pods = _eventually(
        lambda: (lambda items: items if len(items) == 2 else None)(
            core.list_namespaced_pod(namespace).items
        ),
        "two pods created",
    )
    assert {pod.status.phase for pod in pods} == {"Pending"}  # no kubelet, no scheduler

    apps.delete_namespaced_deployment(
        "pause", namespace, body=client.V1DeleteOptions(propagation_policy="Foreground")
    )
    _eventually(
        lambda: (
            not apps.list_namespaced_replica_set(namespace).items
            and not core.list_namespaced_pod(namespace).items
        ),
        "ReplicaSet and pods garbage-collected",
    )


def test_statefulset_controller_creates_pods(api: client.ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    labels = {"app": "db"}
    apps.create_namespaced_stateful_set(
        namespace,
        client.V1StatefulSet(
            metadata=client.V1ObjectMeta(name="db"),
            spec=client.V1StatefulSetSpec(
                service_name="db",
                replicas=1,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[
                            client.V1Container(name="db", image="registry.k8s.io/pause:3.10")
                        ]
                    ),
                ),
            ),
        ),
    )
    pod = _eventually(
        lambda: _found(lambda: core.read_namespaced_pod("db-0", namespace)), "pod db-0"
    )
    assert pod.metadata.owner_references[0].kind == "StatefulSet"


def test_third_party_crds_are_installed(api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    for name in (
        "sparkapplications.sparkoperator.k8s.io",
        "servicemonitors.monitoring.coreos.com",
        "podmonitors.monitoring.coreos.com",
    ):
        assert _established(ext.read_custom_resource_definition(name).to_dict())


def test_an_invalid_spark_application_is_rejected(api: client.ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(api)
    spark_app: dict[str, Any] = {
        "apiVersion": "sparkoperator.k8s.io/v1beta2",
        "kind": "SparkApplication",
        "metadata": {"name": "signals"},
        "spec": {
            "type": "Python",
            "mode": "cluster",
            "sparkVersion": "4.0.0",
            "mainApplicationFile": "local:///opt/app/job.py",
            "driver": {"cores": 1, "memory": "512m"},
            "executor": {"instances": 1, "cores": 1, "memory": "512m"},
        },
    }
    created: Any = custom.create_namespaced_custom_object(
        "sparkoperator.k8s.io", "v1beta2", namespace, "sparkapplications", spark_app
    )
    assert created["spec"]["type"] == "Python"

    bad: dict[str, Any] = {
        **spark_app,
        "metadata": {"name": "bad"},
        "spec": dict(spark_app["spec"]),
    }
    bad["spec"]["type"] = "Rust"
    del bad["spec"]["sparkVersion"]
    with pytest.raises(ApiException) as rejected:
        custom.create_namespaced_custom_object(
            "sparkoperator.k8s.io", "v1beta2", namespace, "sparkapplications", bad
        )
    assert rejected.value.status == 422
    body = str(rejected.value.body)
    assert "spec.type" in body
    assert "spec.sparkVersion" in body


def test_kubectl_explain_sparkapplication(kubeconfig: Path) -> None:
    explained = _kubectl(kubeconfig, "explain", "sparkapplication.spec")
    assert "mainApplicationFile" in explained
    assert "sparkVersion" in explained


def test_kubectl_server_side_apply_of_a_service_monitor(
    kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "monitor.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "ServiceMonitor",
                "metadata": {"name": "feed", "namespace": namespace},
                "spec": {
                    "selector": {"matchLabels": {"app": "feed"}},
                    "endpoints": [{"port": "metrics", "interval": "15s"}],
                },
            }
        )
    )
    out = _kubectl(kubeconfig, "apply", "--server-side", "-f", str(manifest))
    assert "servicemonitor.monitoring.coreos.com/feed serverside-applied" in out
    port = _kubectl(
        kubeconfig,
        "-n",
        namespace,
        "get",
        "servicemonitor",
        "feed",
        "-o",
        "jsonpath={.spec.endpoints[0].port}",
    )
    assert port == "metrics"


def test_helm_installs_a_tiny_chart(
    helm: Path, kubeconfig: Path, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: tiny\nversion: 0.1.0\nkubeVersion: '>=1.31.0-0'\n"
    )
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-greeting\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    common = ["--kubeconfig", str(kubeconfig), "--namespace", namespace]
    subprocess.run(
        [str(helm), "install", "tiny", str(chart), *common, "--set", "greeting=hi", "--wait"],
        check=True,
        capture_output=True,
        text=True,
    )
    cm = client.CoreV1Api(api).read_namespaced_config_map("tiny-greeting", namespace)
    assert cm.data == {"greeting": "hi"}
    releases = subprocess.run(
        [str(helm), "list", *common, "-o", "json"], check=True, capture_output=True, text=True
    ).stdout
    assert '"status":"deployed"' in releases
    subprocess.run([str(helm), "uninstall", "tiny", *common], check=True, capture_output=True)
    assert _gone(
        lambda: client.CoreV1Api(api).read_namespaced_config_map("tiny-greeting", namespace)
    )


def test_rbac_is_enforced_for_service_accounts(api: client.ApiClient, namespace: str) -> None:
    review = client.AuthorizationV1Api(api).create_subject_access_review(
        client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=f"system:serviceaccount:{namespace}:default",
                resource_attributes=client.V1ResourceAttributes(
                    namespace=namespace, verb="create", resource="configmaps"
                ),
            )
        )
    )
    assert review.status is not None
    assert review.status.allowed is False


def _kubectl(kubeconfig: Path, *args: str) -> str:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is not on PATH"
    done = subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)} failed: {done.stderr}"
    return done.stdout


def _established(crd: dict[str, Any]) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def _gone(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def _found(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _eventually(probe: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Polls until `probe` returns something truthy; controllers act asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = probe()
        except (ApiException, dynamic.exceptions.ResourceNotFoundError):
            result = None
            if time.monotonic() > deadline:
                raise
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for: {what}")
        time.sleep(0.2)
