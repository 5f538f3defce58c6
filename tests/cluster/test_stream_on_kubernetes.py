"""The stream job's Spark session on Kubernetes: a SparkApplication of the project's Spark image
(spark-operator, cluster mode; the driver pod's entry point runs spark-submit with a k8s://
master) builds its session with quantcore.stream's own code, keeps the master and bind address
spark-submit gave it, and checkpoints a stateful streaming query to s3a:// on the S3 server
inside the node (moto, quantcore.devservices.s3), with the jars baked into the image."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, dynamic, utils
from kubernetes.client.exceptions import ApiException

from quantcore.devcluster import cluster, images
from quantcore.devservices import s3
from tests.cluster.test_spark_operator import _pod_template
from tests.fixtures.cluster import api_client

pytestmark = pytest.mark.cluster

# The driver builds the session as `quantcore stream` does (job.session_conf, session.
# build_session), runs a windowless aggregation (state store files written by the executor)
# for a few batches and prints what the session ended up with.
JOB = """\
import json, os, time
from pyspark.sql import functions as F
from quantcore.stream import job, session

checkpoint = os.environ["CHECKPOINT"]
spark = session.build_session(
    "s3a-check", [], **job.session_conf(threads=1, checkpoint=checkpoint)
)
conf = spark.sparkContext.getConf()
counts = (
    spark.readStream.format("rate").option("rowsPerSecond", 10).load()
    .groupBy((F.col("value") % 3).alias("k")).count()
)
query = (
    counts.writeStream.format("noop").outputMode("update")
    .option("checkpointLocation", job.join_location(checkpoint, "counts"))
    .trigger(processingTime="2 seconds").start()
)
deadline = time.monotonic() + 240
while time.monotonic() < deadline and (query.lastProgress or {}).get("batchId", -1) < 3:
    if query.exception() is not None:
        break
    time.sleep(1)
failure = query.exception()
batch = (query.lastProgress or {}).get("batchId", -1)
query.stop()
print("RESULT " + json.dumps({
    "master": conf.get("spark.master"),
    "bind": conf.get("spark.driver.bindAddress"),
    "packages": conf.get("spark.jars.packages", ""),
    "endpoint": conf.get("spark.hadoop.fs.s3a.endpoint", ""),
    "batch": batch,
    "failure": str(failure) if failure else "",
}))
spark.stop()
"""


@pytest.fixture(scope="module")
def api(spark_operator: cluster.Cluster) -> Iterator[client.ApiClient]:
    with api_client(spark_operator.kubeconfig) as api:
        yield api


@pytest.fixture
def job_namespace(api: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(api)
    name = f"t-s3a-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
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
        # The pod templates mount the job from a ConfigMap named `job` at /opt/job.
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "job"},
            "data": {"s3a_check.py": JOB},
        },
    ):
        utils.create_from_dict(api, manifest, namespace=name)
    try:
        yield name
    finally:
        core.delete_namespace(name)


def _with_env(template: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    template["spec"]["containers"][0]["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return template


def test_stream_session_keeps_the_k8s_master_and_checkpoints_to_s3_in_the_node(
    api: client.ApiClient,
    job_namespace: str,
    built_images: dict[str, images.BuiltImage],
    node_s3: s3.NodeS3,
) -> None:
    prefix = f"stream/{job_namespace}"
    checkpoint = f"s3a://{node_s3.bucket}/{prefix}"
    # Driver: where the checkpoint is and which S3 API serves it (quantcore.stream.s3a reads
    # these); executors: credentials only (the S3A settings reach them through Spark's conf).
    credentials = {k: v for k, v in s3.client_env(node_s3.endpoint).items() if k.startswith("AWS_")}
    driver_env = {**credentials, "CHECKPOINT": checkpoint}
    executor_env = {k: v for k, v in credentials.items() if k != "AWS_ENDPOINT_URL_S3"}
    executor_template = _with_env(_pod_template(), executor_env)
    executor_template["spec"]["containers"][0]["name"] = "spark-kubernetes-executor"
    application = {
        "apiVersion": "sparkoperator.k8s.io/v1beta2",
        "kind": "SparkApplication",
        "metadata": {"name": "s3a-check", "namespace": job_namespace},
        "spec": {
            "type": "Python",
            "pythonVersion": "3",
            "mode": "cluster",
            "image": built_images["spark"].ref,
            "imagePullPolicy": "Never",
            "mainApplicationFile": "local:///opt/job/s3a_check.py",
            "sparkVersion": "4.2.0",
            "restartPolicy": {"type": "Never"},
            "sparkConf": {"spark.sql.shuffle.partitions": "2"},
            "driver": {
                "cores": 1,
                "coreRequest": "100m",
                "memory": "768m",
                "serviceAccount": "spark",
                "template": _with_env(_pod_template(), driver_env),
            },
            "executor": {
                "instances": 1,
                "cores": 1,
                "coreRequest": "100m",
                "memory": "768m",
                "template": executor_template,
            },
        },
    }
    applications = dynamic.DynamicClient(api).resources.get(
        api_version="sparkoperator.k8s.io/v1beta2", kind="SparkApplication"
    )
    applications.create(body=application, namespace=job_namespace)
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + 600
    state = None
    while time.monotonic() < deadline:
        found = applications.get(name="s3a-check", namespace=job_namespace).to_dict()
        state = (found.get("status") or {}).get("applicationState", {}).get("state")
        if state in ("COMPLETED", "FAILED", "SUBMISSION_FAILED"):
            break
        time.sleep(1)
    log = _driver_log(core, job_namespace)
    assert state == "COMPLETED", f"state {state}; driver log:\n{log[-4000:]}"
    lines = [line for line in log.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no RESULT in the driver log:\n{log[-4000:]}"
    result = json.loads(lines[-1].removeprefix("RESULT "))
    driver: Any = core.read_namespaced_pod("s3a-check-driver", job_namespace)
    # spark-submit's master and the pod's own address, not local[N] on loopback.
    assert result["master"].startswith("k8s://"), result
    assert result["bind"] == driver.status.pod_ip, result
    assert result["packages"] == "", result  # nothing resolved at start: jars are in the image
    assert result["endpoint"] == node_s3.endpoint, result
    assert result["failure"] == "", result
    assert result["batch"] >= 3, result
    keys = s3.object_keys(node_s3.host_endpoint, node_s3.bucket, prefix + "/counts/")
    assert f"{prefix}/counts/metadata" in keys
    assert any(k.startswith(f"{prefix}/counts/commits/") for k in keys), keys
    # State store files, written by the executor pod through S3A.
    assert any(k.startswith(f"{prefix}/counts/state/") for k in keys), keys


def _driver_log(core: client.CoreV1Api, namespace: str) -> str:
    try:
        return str(core.read_namespaced_pod_log("s3a-check-driver", namespace))
    except ApiException as error:
        return f"(no driver log: {error.reason})"
