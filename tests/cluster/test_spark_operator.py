"""The kubeflow spark-operator, built from its Go module and installed from its own chart, runs a
SparkApplication on the node: the driver and one executor as pods of the project's Spark
image, with Kubernetes as the Spark master, to COMPLETED."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, dynamic, utils
from kubernetes.client.exceptions import ApiException

from quantcore.devcluster import cluster, images
from tests.fixtures.cluster import RESTRICTED_CONTAINER, api_client

pytestmark = pytest.mark.cluster

# Each task's partition sums its share; the driver prints the total and the executors seen.
JOB = """\
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("sum-check").getOrCreate()
total = spark.sparkContext.parallelize(range(1, 100001), 4).sum()
executors = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1
print(f"sum={total} executors={executors}")
spark.stop()
"""


@pytest.fixture(scope="module")
def api(spark_operator: cluster.Cluster) -> Iterator[client.ApiClient]:
    with api_client(spark_operator.kubeconfig) as api:
        yield api


@pytest.fixture
def job_namespace(api: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(api)
    name = f"t-spark-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # The driver's own identity: it creates its executors, their Service and ConfigMap.
    for manifest in (
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "spark"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "spark-driver"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["pods", "services", "configmaps", "persistentvolumeclaims"],
                    "verbs": ["create", "get", "list", "watch", "delete", "deletecollection"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "spark-driver"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "spark-driver",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "spark", "namespace": name}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "job"},
            "data": {"sum_check.py": JOB},
        },
    ):
        utils.create_from_dict(api, manifest, namespace=name)
    try:
        yield name
    finally:
        core.delete_namespace(name)


def _pod_template() -> dict[str, Any]:
    """What Spark's own settings cannot say: the job mounted from its ConfigMap, writable
    scratch directories under a read-only root, and the restricted security context."""
    return {
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "spark-kubernetes-driver",
                    "securityContext": RESTRICTED_CONTAINER,
                    "volumeMounts": [
                        {"name": "job", "mountPath": "/opt/job"},
                        {"name": "tmp", "mountPath": "/tmp"},
                        {"name": "work", "mountPath": "/opt/spark/work-dir"},
                    ],
                }
            ],
            "volumes": [
                {"name": "job", "configMap": {"name": "job"}},
                {"name": "tmp", "emptyDir": {}},
                {"name": "work", "emptyDir": {}},
            ],
        }
    }


def test_spark_application_runs_to_completed_with_driver_and_executor_pods(
    api: client.ApiClient, job_namespace: str, built_images: dict[str, images.BuiltImage]
) -> None:
    spark_image = built_images["spark"].ref
    executor_template = _pod_template()
    executor_template["spec"]["containers"][0]["name"] = "spark-kubernetes-executor"
    application = {
        "apiVersion": "sparkoperator.k8s.io/v1beta2",
        "kind": "SparkApplication",
        "metadata": {"name": "sum-check", "namespace": job_namespace},
        "spec": {
            "type": "Python",
            "pythonVersion": "3",
            "mode": "cluster",
            "image": spark_image,
            "imagePullPolicy": "Never",
            "mainApplicationFile": "local:///opt/job/sum_check.py",
            "sparkVersion": "4.2.0",
            "restartPolicy": {"type": "Never"},
            "driver": {
                "cores": 1,
                "coreRequest": "100m",
                "memory": "512m",
                "serviceAccount": "spark",
                "template": _pod_template(),
            },
            "executor": {
                "instances": 1,
                "cores": 1,
                "coreRequest": "100m",
                "memory": "512m",
                "template": executor_template,
            },
        },
    }
    applications = dynamic.DynamicClient(api).resources.get(
        api_version="sparkoperator.k8s.io/v1beta2", kind="SparkApplication"
    )
    applications.create(body=application, namespace=job_namespace)
    core = client.CoreV1Api(api)
    executors_seen: set[str] = set()
    deadline = time.monotonic() + 300
    state = None
    while time.monotonic() < deadline:
        found = applications.get(name="sum-check", namespace=job_namespace).to_dict()
        state = (found.get("status") or {}).get("applicationState", {}).get("state")
        pods: Any = core.list_namespaced_pod(job_namespace, label_selector="spark-role=executor")
        executors_seen.update(pod.metadata.name for pod in pods.items)
        if state in ("COMPLETED", "FAILED", "SUBMISSION_FAILED"):
            break
        time.sleep(1)
    driver_log = _driver_log(core, job_namespace)
    assert state == "COMPLETED", f"state {state}; driver log:\n{driver_log[-3000:]}"
    assert "sum=5000050000 executors=1" in driver_log
    assert len(executors_seen) == 1
    driver: Any = core.read_namespaced_pod("sum-check-driver", job_namespace)
    assert driver.spec.containers[0].image == spark_image
    assert driver.spec.containers[0].security_context.read_only_root_filesystem is True


def _driver_log(core: client.CoreV1Api, namespace: str) -> str:
    try:
        return str(core.read_namespaced_pod_log("sum-check-driver", namespace))
    except ApiException as error:
        return f"(no driver log: {error.reason})"
