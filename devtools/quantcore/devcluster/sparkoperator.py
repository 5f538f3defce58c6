"""The kubeflow spark-operator binary (controller and webhook), built from its Go module at the
version whose CRDs the test ground installs, once per version.

Its go.mod pins every k8s.io/* module with replace directives, which a module that merely
requires it does not inherit: the wrapper module copies them (the same wrapper approach as
binaries.py uses for Kubernetes).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

from quantcore.devcluster import versions
from quantcore.devcluster.binaries import (
    BuildError,
    _go,
    _go_json,
    _promote,
    _record_build_time,
    go_directive,
    wrapper_gomod,
)
from quantcore.devservices.cache import cache_lock

MODULE = "github.com/kubeflow/spark-operator/v2"
# One binary, `spark-operator controller start` / `spark-operator webhook start`.
MAIN_PACKAGE = f"{MODULE}/cmd/operator"


def same_path_replaces(gomod: str) -> dict[str, str]:
    """`path => path version` replace directives of a go.mod, as path -> version.

    A replace that points elsewhere (another module or a directory) cannot be carried into a
    wrapper module as is: that is an error here rather than a silently different build.
    """
    replaces: dict[str, str] = {}
    blocks = re.findall(r"^replace\s*\((.*?)^\)", gomod, re.M | re.S)
    lines = [line for block in blocks for line in block.splitlines()]
    lines += re.findall(r"^replace\s+([^(\n].*)$", gomod, re.M)
    for line in lines:
        line = line.split("//")[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"(\S+)(?:\s+\S+)?\s*=>\s*(\S+)\s+(\S+)", line)
        if match is None or match.group(1) != match.group(2):
            raise BuildError(f"unsupported replace directive in {MODULE}'s go.mod: {line!r}")
        replaces[match.group(1)] = match.group(3)
    return replaces


def operator_dir() -> Path:
    return versions.cache_root() / f"spark-operator-{versions.SPARK_OPERATOR}"


def ensure_spark_operator() -> Path:
    """The spark-operator binary for versions.SPARK_OPERATOR, building it if the cache lacks it."""
    root = operator_dir()
    binary = root / "bin" / "spark-operator"
    with cache_lock(root):
        if binary.exists():
            return binary
        started = time.monotonic()
        info = _go_json(
            ["mod", "download", "-json", f"{MODULE}@{versions.SPARK_OPERATOR}"], cwd=root
        )
        gomod = Path(info["GoMod"]).read_text()
        build_dir = root / "build"
        build_dir.mkdir(parents=True, exist_ok=True)
        (build_dir / "go.mod").write_text(
            wrapper_gomod(
                go=go_directive(gomod),
                requires={MODULE: versions.SPARK_OPERATOR},
                replaces=same_path_replaces(gomod),
                tools=[MAIN_PACKAGE],
            )
        )
        _go(["mod", "tidy"], cwd=build_dir)
        staged = root / "bin.tmp"
        staged.mkdir(parents=True, exist_ok=True)
        _go(
            [
                "build",
                "-trimpath",
                # The version stamp upstream's Makefile sets (`spark-operator version` prints it).
                f"-ldflags=-s -w -X {MODULE}.version={versions.SPARK_OPERATOR}",
                "-o",
                str(staged / "spark-operator"),
                MAIN_PACKAGE,
            ],
            cwd=build_dir,
        )
        _promote(staged, root / "bin")
        _record_build_time(root, "spark-operator", started)
    return binary


# ---- the release: upstream's own chart, installed by helm into a test-ground cluster --------

RELEASE = "spark-operator"
NAMESPACE = "spark-operator"


class ReleaseError(RuntimeError):
    """helm could not install the release; the message carries helm's output."""


def chart_dir() -> Path:
    """Upstream's Helm chart at the pinned version, from the same module download."""
    info = _go_json(
        ["mod", "download", "-json", f"{MODULE}@{versions.SPARK_OPERATOR}"], cwd=operator_dir()
    )
    chart = Path(info["Dir"]) / "charts" / "spark-operator-chart"
    if not (chart / "Chart.yaml").exists():
        raise BuildError(f"{MODULE}@{versions.SPARK_OPERATOR} has no chart at {chart}")
    return chart


def chart_values(image_ref: str) -> list[str]:
    """helm --set arguments: our locally built image (no registry serves it), every namespace
    watched, one replica without leader election, and no webhook: SparkApplications in this
    version give their driver and executor pods a template for what Spark's own settings
    cannot say (security context, ConfigMap volumes), so no pod needs mutating."""
    name, _, tag = image_ref.rpartition(":")
    registry, _, repository = name.partition("/")
    if not (registry and repository and tag):
        raise ValueError(f"image reference {image_ref!r} is not registry/repository:tag")
    return [
        *("--set", f"image.registry={registry}"),
        *("--set", f"image.repository={repository}"),
        *("--set", f"image.tag={tag}"),
        *("--set", "image.pullPolicy=Never"),
        *("--set", "webhook.enable=false"),
        *("--set-json", 'spark.jobNamespaces=[""]'),
        *("--set", "controller.leaderElection.enable=false"),
        *("--set", "controller.uiService.enable=false"),
    ]


def install(kubeconfig: Path, helm: Path, image_ref: str, *, timeout: str = "180s") -> None:
    """Installs (or upgrades) the release and waits until its controller is Available. The
    SparkApplication CRD is the test ground's (crds.py), so the chart's copy is skipped."""
    command = [
        str(helm),
        *("upgrade", "--install", RELEASE, str(chart_dir())),
        *("--namespace", NAMESPACE, "--create-namespace", "--skip-crds"),
        f"--kubeconfig={kubeconfig}",
        *chart_values(image_ref),
        *("--wait", "--timeout", timeout),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ReleaseError(f"helm install of the spark-operator failed:\n{done.stderr.strip()}")
    _grant_network_policies(kubeconfig)


def network_policy_rbac() -> list[dict[str, Any]]:
    """spark-submit in Spark 4.2 applies a NetworkPolicy beside every driver, which the
    chart's RBAC for the controller (v2.4.0) does not allow: submissions fail with 403."""
    name = "spark-operator-controller-networkpolicies"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["networkpolicies"],
                    "verbs": ["create", "get", "list", "watch", "patch", "update", "delete"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": f"{RELEASE}-controller", "namespace": NAMESPACE}
            ],
        },
    ]


def _grant_network_policies(kubeconfig: Path) -> None:
    from kubernetes import dynamic
    from kubernetes.config import new_client_from_config

    with new_client_from_config(config_file=str(kubeconfig)) as api:
        resources = dynamic.DynamicClient(api).resources
        for manifest in network_policy_rbac():
            kind = resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
            kind.server_side_apply(
                body=manifest, field_manager="quantcore-devcluster", force_conflicts=True
            )
