"""The Helm chart against a real kube-apiserver: the rendered manifests pass server-side
validation, `helm install` gives the operator exactly enough RBAC to reconcile the sample
MarketFeed with the chart's own service-account token, a missing verb fails loudly, and a
namespace enforcing the `restricted` Pod Security Standard admits every pod the platform
creates.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from quantcore.devservices.kafka import KafkaBroker
from quantcore.kafkaauth import KafkaAuth
from quantcore.operator import api, planner
from tests.chart import CHART, ROOT, of_kind, pod_specs, render, run_helm, set_args
from tests.fixtures.cluster import api_client

pytestmark = pytest.mark.cluster

Obj = dict[str, Any]
SERVICE_ACCOUNT_SUFFIX = "-quantcore"


# ---- helpers ---------------------------------------------------------------------------


def release_name() -> str:
    # ClusterRoles are cluster-wide: each test's release gets its own name.
    return f"qc{uuid.uuid4().hex[:6]}"


def chart_values(namespace: str, **extra: Any) -> dict[str, Any]:
    return {"operator.watchNamespaces": [namespace], **extra}


@contextmanager
def installed(kubeconfig: Path, namespace: str, values: dict[str, Any]) -> Iterator[str]:
    """`helm install` the chart; uninstall afterwards (cluster-scoped RBAC included)."""
    release = release_name()
    run_helm(
        "install",
        release,
        str(CHART),
        "--kubeconfig",
        str(kubeconfig),
        "--namespace",
        namespace,
        *set_args(values),
    )
    try:
        yield release
    finally:
        run_helm(
            "uninstall",
            release,
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            namespace,
            check=False,
        )


def apply_crds(dyn: DynamicClient) -> None:
    """The documented CRD upgrade step: server-side apply of crds/, taking ownership."""
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            dyn.server_side_apply(
                resource, body=doc, field_manager="quantcore-crds", force_conflicts=True
            )


def wait_for_crd(dyn: DynamicClient) -> None:
    crds = dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    deadline = time.monotonic() + 30
    while True:
        crd = crds.get(name=f"{api.PLURAL}.{api.GROUP}").to_dict()
        listed = (crd.get("status") or {}).get("conditions") or []
        conditions = {c["type"]: c["status"] for c in listed}
        if conditions.get("Established") == "True":
            return
        assert time.monotonic() < deadline, f"MarketFeed CRD not established: {conditions}"
        time.sleep(0.2)


def service_account_kubeconfig(
    kubeconfig: Path, namespace: str, account: str, directory: Path
) -> Path:
    """A kubeconfig that authenticates as `account` with a TokenRequest token, on the same
    server and CA as the admin kubeconfig."""
    admin = yaml.safe_load(kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    with api_client(kubeconfig) as admin_api:
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        )
        issued = client.CoreV1Api(admin_api).create_namespaced_service_account_token(
            account, namespace, request
        )
        assert issued.status is not None
        token = issued.status.token
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "test", "user": account}}],
        "current-context": account,
    }
    path = directory / f"{account}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@contextmanager
def operator_process(
    sa_kubeconfig: Path, namespace: str, log: Path, kafka_auth: KafkaAuth
) -> Iterator[Callable[[], str]]:
    """`quantcore operator` as a local process with the given credentials (Kubernetes: the
    kubeconfig; Kafka: its own user, as the chart's operator.kafka gives it); yields a
    function that returns its log so far."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update(kafka_auth.env())
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "quantcore.cli",
                "operator",
                "--kubeconfig",
                str(sa_kubeconfig),
                "--namespace",
                namespace,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        try:
            yield log.read_text
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until(
    check: Callable[[], Any], timeout: float, describe: Callable[[], str], interval: float = 0.5
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(describe(), pytrace=False)
        time.sleep(interval)


def get_feed(dyn: DynamicClient, namespace: str, name: str) -> Obj:
    feeds = dyn.resources.get(api_version=f"{api.GROUP}/{api.VERSION}", kind=api.KIND)
    result: Obj = feeds.get(name=name, namespace=namespace).to_dict()
    return result


def condition(feed: Obj, kind: str) -> Obj | None:
    return next(
        (c for c in (feed.get("status") or {}).get("conditions", []) if c["type"] == kind), None
    )


def can(
    authz: client.AuthorizationV1Api, user: str, verb: str, group: str, resource: str, ns: str
) -> bool:
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=["system:serviceaccounts", f"system:serviceaccounts:{ns}"],
            resource_attributes=client.V1ResourceAttributes(
                verb=verb, group=group, resource=resource, namespace=ns
            ),
        )
    )
    status = authz.create_subject_access_review(review).status
    assert status is not None
    return bool(status.allowed)


# ---- server-side validation ------------------------------------------------------------


def test_rendered_chart_passes_server_side_dry_run(kubeconfig: Path, namespace: str) -> None:
    with api_client(kubeconfig) as admin:
        dyn = DynamicClient(admin)
        apply_crds(dyn)
        wait_for_crd(dyn)
        objects = render(
            chart_values(
                namespace,
                **{
                    "sampleMarketFeed.enabled": True,
                    "serviceMonitor.enabled": True,
                    "fullnameOverride": f"dry-{uuid.uuid4().hex[:6]}",
                },
            ),
            namespace=namespace,
        )
        kinds = {o["kind"] for o in objects}
        assert {
            "Deployment",
            "ServiceAccount",
            "ClusterRole",
            "Role",
            "RoleBinding",
            "NetworkPolicy",
            "ServiceMonitor",
            api.KIND,
        } <= kinds
        for obj in objects:
            resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            namespace_of = obj["metadata"].get("namespace") if resource.namespaced else None
            dyn.server_side_apply(
                resource,
                body=obj,
                namespace=namespace_of,
                field_manager="chart-dry-run",
                dry_run="All",
                query_params=[("fieldValidation", "Strict")],
            )
        # The dry run is a real validation: a bad sample spec is refused by the CRD's schema.
        feed = next(o for o in objects if o["kind"] == api.KIND)
        broken = {**feed, "spec": {**feed["spec"], "symbols": ["btc-usdt"]}}
        feeds = dyn.resources.get(api_version=feed["apiVersion"], kind=api.KIND)
        with pytest.raises(ApiException) as refused:
            dyn.server_side_apply(
                feeds, body=broken, namespace=namespace, field_manager="t", dry_run="All"
            )
        assert refused.value.status == 422
        # Secure by default: a MarketFeed that names no TLS Secret and does not say
        # `serving.insecure: true` is refused, with what to do.
        unsecured = {**feed, "spec": {k: v for k, v in feed["spec"].items() if k != "serving"}}
        with pytest.raises(ApiException) as refused:
            dyn.server_side_apply(
                feeds, body=unsecured, namespace=namespace, field_manager="t", dry_run="All"
            )
        assert refused.value.status == 422
        assert "serving is secure by default" in str(refused.value.body)
        # Nothing was created by the dry runs.
        assert not client.AppsV1Api(admin).list_namespaced_deployment(namespace).items


# ---- RBAC: the chart's service account is enough, and nothing more --------------------


def install_and_reconcile_values(namespace: str, kafka: str) -> dict[str, Any]:
    return chart_values(
        namespace,
        **{
            "sampleMarketFeed.enabled": True,
            "sampleMarketFeed.spec": {
                "symbols": ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
                "kafka": {
                    "bootstrap": kafka,
                    "partitions": 3,
                    # The pods never start here; the operator uses its own user.
                    "credentials": {
                        "feedSecretName": "sample-kafka-feed",
                        "streamSecretName": "sample-kafka-stream",
                    },
                    "caSecretName": "sample-kafka-ca",
                },
                "sharding": {"symbolsPerShard": 2},
                "streams": {"trades": True},
                "spark": {"executor": {"cores": 2}},
            },
        },
    )


def expected_children(feed: str) -> list[tuple[str, str]]:
    return [
        ("ConfigMap", planner.routing_configmap_name(feed)),
        ("Deployment", planner.shard_deployment_name(feed, 0)),
        ("Deployment", planner.shard_deployment_name(feed, 1)),
        ("StatefulSet", planner.redis_name(feed)),
        ("Deployment", planner.serve_name(feed)),
        ("SparkApplication", planner.spark_application_name(feed)),
        ("PodDisruptionBudget", planner.serve_name(feed)),
    ]


def missing_children(dyn: DynamicClient, namespace: str, feed: str) -> list[str]:
    api_versions = {
        "ConfigMap": "v1",
        "Deployment": "apps/v1",
        "StatefulSet": "apps/v1",
        "SparkApplication": "sparkoperator.k8s.io/v1beta2",
        "PodDisruptionBudget": "policy/v1",
    }
    missing = []
    for kind, name in expected_children(feed):
        resource = dyn.resources.get(api_version=api_versions[kind], kind=kind)
        try:
            resource.get(name=name, namespace=namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            missing.append(f"{kind}/{name}")
    return missing


def test_operator_reconciles_with_the_charts_service_account(
    kubeconfig: Path,
    namespace: str,
    kafka_bootstrap: str,
    kafka_service: KafkaBroker,
    tmp_path: Path,
) -> None:
    values = install_and_reconcile_values(namespace, kafka_bootstrap)
    with installed(kubeconfig, namespace, values) as release, api_client(kubeconfig) as admin:
        dyn = DynamicClient(admin)
        account = f"{release}{SERVICE_ACCOUNT_SUFFIX}"
        user = f"system:serviceaccount:{namespace}:{account}"
        authz = client.AuthorizationV1Api(admin)
        # Least privilege, as the API server's authorizer sees it.
        assert can(authz, user, "patch", "apps", "deployments", namespace)
        assert not can(authz, user, "get", "", "secrets", namespace)
        # The managed Redis's passwords: created once, never read.
        assert can(authz, user, "create", "", "secrets", namespace)
        assert not can(authz, user, "patch", "", "secrets", namespace)
        assert not can(authz, user, "list", "", "secrets", namespace)
        assert not can(authz, user, "create", "", "pods", namespace)
        assert not can(authz, user, "patch", "apps", "deployments", "kube-system")

        sa_config = service_account_kubeconfig(kubeconfig, namespace, account, tmp_path)
        feed_name = "sample"
        with operator_process(
            sa_config, namespace, tmp_path / "operator.log", kafka_service.auth("operator")
        ) as log:

            def converged() -> bool:
                # Every child exists (each server-side applied with the chart's token) and the
                # status, written through marketfeeds/status, describes this generation.
                feed = get_feed(dyn, namespace, feed_name)
                status = feed.get("status") or {}
                return (
                    not missing_children(dyn, namespace, feed_name)
                    and status.get("observedGeneration") == feed["metadata"]["generation"]
                )

            wait_until(
                converged,
                timeout=120,
                describe=lambda: (
                    f"the operator did not reconcile with the chart's RBAC; missing "
                    f"{missing_children(dyn, namespace, feed_name)}; status "
                    f"{get_feed(dyn, namespace, feed_name).get('status')}\n--- log ---\n"
                    f"{log()[-6000:]}"
                ),
            )
            feed = get_feed(dyn, namespace, feed_name)
            types = {c["type"] for c in feed["status"].get("conditions", [])}
            assert {"Ready", "Progressing", "Degraded"} <= types, feed["status"]
            degraded = condition(feed, "Degraded")
            assert degraded is not None
            assert degraded["status"] == "False", degraded
            assert feed["status"]["shards"] == 2
            assert feed["status"]["symbols"] == 3
            assert "forbidden" not in log().lower(), log()[-4000:]
            # The operator made the Redis passwords Secret, owned by the MarketFeed.
            secret: Any = client.CoreV1Api(admin).read_namespaced_secret(
                f"{feed_name}-redis-credentials", namespace
            )
            assert set(secret.data) == {"relay-password", "serve-password"}
            (owner,) = secret.metadata.owner_references
            assert (owner.kind, owner.name) == ("MarketFeed", feed_name)


def test_a_missing_verb_fails_loudly(
    kubeconfig: Path,
    namespace: str,
    kafka_bootstrap: str,
    kafka_service: KafkaBroker,
    tmp_path: Path,
) -> None:
    values = install_and_reconcile_values(namespace, kafka_bootstrap)
    with installed(kubeconfig, namespace, values) as release, api_client(kubeconfig) as admin:
        dyn = DynamicClient(admin)
        rbac_api = client.RbacAuthorizationV1Api(admin)
        role_name = f"{release}-quantcore-operator"
        role = rbac_api.read_namespaced_role(role_name, namespace)
        # Take `patch` on Deployments away: server-side apply of every shard now fails.
        for rule in role.rules or []:
            if "deployments" in (rule.resources or []):
                rule.verbs = [v for v in rule.verbs if v != "patch"]
        rbac_api.replace_namespaced_role(role_name, namespace, role)

        account = f"{release}{SERVICE_ACCOUNT_SUFFIX}"
        sa_config = service_account_kubeconfig(kubeconfig, namespace, account, tmp_path)
        with operator_process(
            sa_config, namespace, tmp_path / "operator.log", kafka_service.auth("operator")
        ) as log:
            core = client.CoreV1Api(admin)

            def forbidden_event() -> list[Any]:
                events = core.list_namespaced_event(
                    namespace, field_selector="involvedObject.name=sample"
                ).items
                return [e for e in events if "forbidden" in (e.message or "").lower()]

            events = wait_until(
                forbidden_event,
                timeout=90,
                describe=lambda: f"no Event about the forbidden patch\n{log()[-6000:]}",
            )
            assert events[0].type in {"Warning", "Error"}
            assert "deployments" in events[0].message

            def degraded() -> Obj | None:
                cond = condition(get_feed(dyn, namespace, "sample"), "Degraded")
                return cond if cond and cond["status"] == "True" else None

            cond = wait_until(
                degraded,
                timeout=60,
                describe=lambda: (
                    "the MarketFeed has no Degraded=True condition after a forbidden apply; "
                    f"status {get_feed(dyn, namespace, 'sample').get('status')}"
                ),
            )
            assert "forbidden" in cond["message"].lower() or cond["reason"] == "Forbidden"


# ---- Pod Security: restricted ----------------------------------------------------------


def bare_pod(name: str, namespace: str, spec: Obj) -> Any:
    """A Pod body; typed Any because the client takes a plain dict as readily as a V1Pod."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name.lower().replace("/", "-")[:63], "namespace": namespace},
        "spec": spec,
    }


def test_restricted_namespace_admits_every_pod_the_platform_creates(
    kubeconfig: Path, namespace: str
) -> None:
    with api_client(kubeconfig) as admin:
        core = client.CoreV1Api(admin)
        core.patch_namespace(
            namespace,
            {
                "metadata": {
                    "labels": {
                        "pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/enforce-version": "latest",
                    }
                }
            },
        )
        values = chart_values(namespace)
        # Installed first: the pods' service accounts (the operator's, `spark`) must exist.
        with installed(kubeconfig, namespace, values) as release:
            chart_objects = render(values, release=release, namespace=namespace)
            feed = planner.sample_feed(
                name="demo",
                namespace=namespace,
                serving={"autoscaling": {"minReplicas": 2, "maxReplicas": 4}},
            )
            planned = list(planner.plan(feed, None, ["BTCUSDT", "ETHUSDT", "XRPUSDT"]).objects)
            pods = list(pod_specs([*chart_objects, *planned]))
            names = [name for name, _ in pods]
            assert any(n.endswith("/driver") for n in names)
            assert any(n.endswith("/executor") for n in names)
            assert any(n.startswith("StatefulSet/") for n in names)
            # PodSecurity admission judges Pods (there is no kubelet, so the controllers'
            # pods would never start): create each pod template as a bare Pod, dry run.
            for name, spec in pods:
                core.create_namespaced_pod(
                    namespace, bare_pod(name, namespace, spec), dry_run="All"
                )

            # Control: the same namespace refuses a pod that breaks the standard.
            _, spec = pods[0]
            container = spec["containers"][0]
            loose = {
                **spec,
                "containers": [{**container, "securityContext": {"readOnlyRootFilesystem": True}}],
            }
            with pytest.raises(ApiException) as refused:
                core.create_namespaced_pod(
                    namespace, bare_pod("loose", namespace, loose), dry_run="All"
                )
            assert refused.value.status == 403
            assert "violates PodSecurity" in str(refused.value.body)

            # The workloads themselves are accepted as they are.
            dyn = DynamicClient(admin)
            for obj in [*of_kind(chart_objects, "Deployment"), *planned]:
                if obj["kind"] not in {"Deployment", "StatefulSet", "SparkApplication"}:
                    continue
                resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
                dyn.server_side_apply(
                    resource,
                    body=obj,
                    namespace=namespace,
                    field_manager="pss-check",
                    dry_run="All",
                    query_params=[("fieldValidation", "Strict")],
                )
