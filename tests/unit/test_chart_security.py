"""The security baseline, checked offline: every pod the chart renders and every pod the
operator plans for a MarketFeed (the SparkApplication's driver and executor included) meets
the restricted Pod Security Standard with a read-only root filesystem; checkov finds nothing
on the rendered manifests or the Dockerfiles that is not suppressed with a reason.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantcore.operator import planner
from tests.chart import ROOT, of_kind, pod_specs, render, restricted_violations, template_text

MK = (ROOT / "mk" / "chart.mk").read_text()
CHECKOV_VERSION = re.search(r"^CHECKOV_VERSION := (\S+)$", MK, re.M).group(1)  # type: ignore[union-attr]


def checkov_binary() -> Path:
    from quantcore.devcluster import versions

    path = versions.cache_root() / "tools" / f"checkov-{CHECKOV_VERSION}" / "bin" / "checkov"
    if not path.exists():
        pytest.fail(f"checkov {CHECKOV_VERSION} is not installed at {path}: run `make checkov`")
    return path


FEEDS: dict[str, dict[str, Any]] = {
    "default": {},
    "autoscaled": {"serving": {"autoscaling": {"minReplicas": 2, "maxReplicas": 8}}},
    "external-redis": {
        "redis": {
            "mode": "external",
            "url": "rediss://cache:6379/0",
            "credentialsSecretName": "cache-credentials",
            "tlsSecretName": "cache-ca",
        }
    },
    "insecure-redis": {"redis": {"insecure": True}},
    "monitored-universe": {
        "symbols": None,
        "universe": {"quoteAsset": "USDT", "top": 5},
        "monitoring": {"serviceMonitor": True},
    },
}


def planned_objects(spec: dict[str, Any], namespace: str = "default") -> list[dict[str, Any]]:
    body = {k: v for k, v in spec.items() if v is not None}
    feed = planner.sample_feed(namespace=namespace, **body)
    if "symbols" in spec and spec["symbols"] is None:
        feed = feed.model_copy(update={"spec": feed.spec.model_copy(update={"symbols": None})})
    symbols = [f"S{i}USDT" for i in range(45)]
    return list(planner.plan(feed, None, symbols).objects)


@pytest.mark.parametrize("variant", sorted(FEEDS))
def test_every_planned_pod_is_restricted_with_a_read_only_root(variant: str) -> None:
    pods = list(pod_specs(planned_objects(FEEDS[variant])))
    kinds = {name.split("/")[0] for name, _ in pods}
    assert {"Deployment", "SparkApplication"} <= kinds
    for name, pod in pods:
        assert restricted_violations(pod) == [], name


def test_planned_pods_cover_driver_executor_shards_redis_and_serving() -> None:
    names = [name for name, _ in pod_specs(planned_objects({}))]
    assert any(n.endswith("/driver") for n in names)
    assert any(n.endswith("/executor") for n in names)
    assert any(n.startswith("StatefulSet/") for n in names)
    assert sum(n.startswith("Deployment/demo-feed-") for n in names) == 3  # 45 symbols / 20


def test_every_chart_pod_is_restricted_with_a_read_only_root() -> None:
    pods = list(pod_specs(render({"sampleMarketFeed.enabled": True})))
    assert pods, "the chart renders the operator Deployment"
    for name, pod in pods:
        assert restricted_violations(pod) == [], name


def test_the_checker_itself_catches_what_it_should() -> None:
    (_, pod) = next(iter(pod_specs(render())))
    container = pod["containers"][0]
    for key, bad in [
        ("readOnlyRootFilesystem", False),
        ("allowPrivilegeEscalation", True),
        ("privileged", True),
        ("capabilities", {"drop": ["NET_RAW"]}),
    ]:
        broken = {
            **pod,
            "containers": [
                {**container, "securityContext": {**container["securityContext"], key: bad}}
            ],
        }
        assert restricted_violations(broken), key
    assert restricted_violations({**pod, "volumes": [{"name": "h", "hostPath": {"path": "/"}}]})
    assert restricted_violations({**pod, "hostNetwork": True})


def test_only_the_operator_mounts_a_token() -> None:
    for name, pod in pod_specs(planned_objects({})):
        if name.endswith("/driver"):
            continue  # the Spark driver asks the API server for its executors
        assert pod.get("automountServiceAccountToken") is False or "SparkApplication" in name, name
    for sa in of_kind(render(), "ServiceAccount"):
        if sa["metadata"]["name"] != "spark":
            assert sa["automountServiceAccountToken"] is False


# ---- checkov -------------------------------------------------------------------------------


def run_checkov(*args: str) -> dict[str, Any]:
    result = subprocess.run(
        [str(checkov_binary()), "--output", "json", "--skip-download", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if not result.stdout.strip():
        raise AssertionError(f"checkov printed nothing:\n{result.stderr}")
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    merged: dict[str, Any] = {"failed": [], "passed": 0, "skipped": []}
    for r in reports:
        results = r.get("results", {})
        merged["failed"] += results.get("failed_checks", [])
        merged["skipped"] += results.get("skipped_checks", [])
        merged["passed"] += len(results.get("passed_checks", []))
    return merged


def describe(failed: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{f['check_id']} {f['check_name']} ({f.get('resource')}, severity {f.get('severity')})"
        for f in failed
    )


def test_checkov_passes_the_rendered_manifests(tmp_path: Path) -> None:
    manifest = tmp_path / "quantcore.yaml"
    manifest.write_text(
        template_text(
            {"sampleMarketFeed.enabled": True, "serviceMonitor.enabled": True}, include_crds=True
        )
    )
    report = run_checkov("--framework", "kubernetes", "-f", str(manifest))
    # Offline checkov reports no severities, so every failure counts, not only high ones.
    assert report["failed"] == [], describe(report["failed"])
    assert report["passed"] > 50, "checkov ran its Kubernetes checks"
    assert report["skipped"], "the suppressions beside the templates were read"
    for skipped in report["skipped"]:
        reason = skipped["check_result"].get("suppress_comment") or ""
        assert len(reason) > 15, f"{skipped['check_id']} is suppressed without a reason"


def test_checkov_passes_the_planned_workloads(tmp_path: Path) -> None:
    manifest = tmp_path / "planned.yaml"
    planned = planned_objects(FEEDS["autoscaled"], namespace="markets")
    # checkov does not know SparkApplication; its pods are checked above.
    objects = [o for o in planned if o["kind"] != "SparkApplication"]
    # The chart's NetworkPolicies for the feed's namespace belong to the same deployment.
    policies = of_kind(render({"networkPolicies.namespaces": ["markets"]}), "NetworkPolicy")
    manifest.write_text(yaml.safe_dump_all([*objects, *policies]))
    report = run_checkov("--framework", "kubernetes", "-f", str(manifest))
    failed = [f for f in report["failed"] if f["check_id"] not in PLANNED_ACCEPTED]
    assert failed == [], describe(failed)
    # No stale acceptances: each one still names a check that fails for the planned pods.
    assert {f["check_id"] for f in report["failed"]} == set(PLANNED_ACCEPTED)


# Checks the operator's workloads fail for reasons the design accepts; the reason sits here,
# beside the suppression (checkov cannot read annotations on objects it never sees rendered).
PLANNED_ACCEPTED = {
    "CKV_K8S_43": "images are pinned by tag in the MarketFeed spec; digests are the user's choice",
    "CKV_K8S_40": "uids come from the images (10001, redis 999); high-uid rule is advisory",
    "CKV_K8S_15": "imagePullPolicy defaults to IfNotPresent for pinned tags",
    "CKV_K8S_11": "feed shards and Redis set no CPU limit on purpose: throttling adds latency",
    "CKV_K8S_35": "Redis passwords reach serving, the relay and the aclfile writer as env from"
    " the Secret (secretKeyRef, never a plain value), each container only its own user's",
}


def test_checkov_passes_the_dockerfiles() -> None:
    report = run_checkov(
        "--framework",
        "dockerfile",
        "-f",
        str(ROOT / "images" / "Dockerfile.runtime"),
        "-f",
        str(ROOT / "images" / "Dockerfile.spark"),
    )
    assert report["failed"] == [], describe(report["failed"])
    assert report["passed"] > 5
