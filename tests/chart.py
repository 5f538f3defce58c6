"""The Helm chart as tests see it: render it with the pinned helm, pull pod specs out of
rendered or planned objects, and judge a pod against the `restricted` Pod Security Standard.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantcore.devcluster import binaries, versions

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "quantcore"

Obj = dict[str, Any]


def helm() -> Path:
    """The pinned helm binary (built once into the cache by the test ground's code)."""
    try:
        return binaries.ensure_helm()
    except binaries.BuildError as error:
        pytest.fail(f"cannot build helm:\n{error}", pytrace=False)


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm()), *args], capture_output=True, text=True, timeout=300, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}{result.stdout}")
    return result


def set_args(values: dict[str, Any] | None) -> list[str]:
    """`--set-json key=value` for each top-level-path entry of `values` (dotted keys allowed)."""
    import json

    out: list[str] = []
    for key, value in (values or {}).items():
        out += ["--set-json", f"{key}={json.dumps(value)}"]
    return out


def template_text(
    values: dict[str, Any] | None = None,
    *,
    release: str = "qc",
    namespace: str = "quantcore",
    include_crds: bool = False,
    kubeconfig: Path | None = None,
) -> str:
    """`helm template`'s output; with `kubeconfig`, rendered against that cluster (its lookups
    answered, as at install time)."""
    # A helm built by `go install` carries no default Kubernetes version stamp: render for the
    # release the test ground runs, which the chart's kubeVersion accepts.
    args = [
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        versions.KUBERNETES,
        *set_args(values),
    ]
    if include_crds:
        args.append("--include-crds")
    if kubeconfig is not None:
        args += ["--dry-run=server", "--kubeconfig", str(kubeconfig)]
    return run_helm(*args).stdout


def render(values: dict[str, Any] | None = None, **kwargs: Any) -> list[Obj]:
    """Every object `helm template` renders, parsed."""
    return [d for d in yaml.safe_load_all(template_text(values, **kwargs)) if d]


def of_kind(objects: Iterable[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o.get("kind") == kind]


def pod_specs(objects: Iterable[Obj]) -> Iterator[tuple[str, Obj]]:
    """(name, pod spec) for every pod the objects would create.

    A SparkApplication's driver and executor become pods that Spark builds on their pod
    templates (`spark_pod`).
    """
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield f"{kind}/{name}", obj["spec"]["template"]["spec"]
        elif kind == "Pod":
            yield f"Pod/{name}", obj["spec"]
        elif kind == "SparkApplication":
            spec = obj["spec"]
            for role in ("driver", "executor"):
                yield f"{kind}/{name}/{role}", spark_pod(spec, role)


def spark_pod(app_spec: Obj, role: str) -> Obj:
    """The pod Spark builds for `role`: the role's pod `template`, which the spark-operator
    hands to spark-submit, with Spark's container (spark-kubernetes-<role>) in it. Fields
    outside the template reach the pod only through the spark-operator's mutating webhook,
    which is often off, so they count for nothing here."""
    part = app_spec[role]
    pod: Obj = copy.deepcopy((part.get("template") or {}).get("spec") or {})
    name = f"spark-kubernetes-{role}"
    containers = pod.setdefault("containers", [])
    container = next((c for c in containers if c.get("name") == name), None)
    if container is None:
        container = {"name": name}
        containers.insert(0, container)
    container.setdefault("image", part.get("image", app_spec["image"]))
    if role == "driver" and part.get("serviceAccount"):
        pod["serviceAccountName"] = part["serviceAccount"]
    return pod


# Volume types the restricted standard allows.
_RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: Obj) -> list[str]:
    """Why `pod` breaks the restricted Pod Security Standard or has a writable root
    filesystem; empty when it complies. The API server's PodSecurity admission is the
    authority (tests/cluster); this is the fast check beside the code."""
    problems: list[str] = []
    psc = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{flag} is set")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= _RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']} is {sorted(kinds)}")
    pod_non_root = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if psc.get("runAsUser") == 0:
        problems.append("pod runAsUser is 0")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        problems.append(f"pod seccompProfile {pod_seccomp}")
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    if not containers:
        problems.append("no containers")
    for c in containers:
        where = f"container {c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if not (sc.get("runAsNonRoot") is True or (pod_non_root and "runAsNonRoot" not in sc)):
            problems.append(f"{where}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            problems.append(f"{where}: runAsUser is 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: seccompProfile is {seccomp}")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{where}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: adds capabilities {caps.get('add')}")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: root filesystem is writable")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{where}: hostPort {port['hostPort']}")
    return problems
