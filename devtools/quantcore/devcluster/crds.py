"""Third-party CRDs our operator writes objects of, taken from their upstream Go modules at pinned
versions (never hand-written) and installed with server-side apply.

The SparkApplication CRD is about 800 KB: a client-side apply would store all of it again in
the last-applied annotation and exceed the 256 KB annotation limit, hence server-side apply.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from quantcore.devcluster import versions

FIELD_MANAGER = "quantcore-devcluster"

# module -> files inside the module's source tree, as published at the pinned tag.
SOURCES: dict[str, tuple[str, ...]] = {
    f"github.com/kubeflow/spark-operator/v2@{versions.SPARK_OPERATOR}": (
        "config/crd/bases/sparkoperator.k8s.io_sparkapplications.yaml",
        # The controller refuses to start unless every kind it serves is known.
        "config/crd/bases/sparkoperator.k8s.io_scheduledsparkapplications.yaml",
        "config/crd/bases/sparkoperator.k8s.io_sparkconnects.yaml",
    ),
    f"github.com/prometheus-operator/prometheus-operator@{versions.PROMETHEUS_OPERATOR}": (
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
        "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
    ),
}


class CrdError(RuntimeError):
    """A CRD could not be fetched or did not become Established."""


def third_party_crd_paths() -> list[Path]:
    """Local copies of the pinned upstream CRD files, fetched with `go mod download` once."""
    target = versions.crd_dir()
    wanted = [target / Path(f).name for files in SOURCES.values() for f in files]
    if all(path.exists() for path in wanted):
        return wanted
    staged = target.with_name(target.name + ".tmp")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    for module, files in SOURCES.items():
        module_dir = _download(module)
        for name in files:
            source = module_dir / name
            if not source.exists():
                raise CrdError(f"{module} has no {name}; did the upstream layout change?")
            shutil.copyfile(source, staged / source.name)
    shutil.rmtree(target, ignore_errors=True)
    staged.rename(target)
    return wanted


def load(path: Path) -> list[dict[str, Any]]:
    """The CustomResourceDefinition documents in one YAML file."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        if doc.get("kind") != "CustomResourceDefinition":
            raise CrdError(
                f"{path}: expected only CustomResourceDefinitions, got {doc.get('kind')}"
            )
    return docs


def install(api_client: Any, paths: list[Path], *, timeout: float = 60.0) -> list[str]:
    """Server-side applies each CRD and waits until all are Established; returns their names.

    `api_client` is a kubernetes.client.ApiClient (typed loosely: the client is untyped).
    """
    from kubernetes import dynamic

    client = dynamic.DynamicClient(api_client)
    crd_api = client.resources.get(
        api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
    )
    names = []
    for path in paths:
        for doc in load(path):
            crd_api.server_side_apply(body=doc, field_manager=FIELD_MANAGER, force_conflicts=True)
            names.append(doc["metadata"]["name"])
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            conditions = crd_api.get(name=name).to_dict().get("status", {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                pending.discard(name)
        if pending:
            time.sleep(0.2)
    if pending:
        raise CrdError(f"CRDs not Established after {timeout:.0f}s: {sorted(pending)}")
    return names


def _download(module: str) -> Path:
    go = shutil.which("go")
    if go is None:
        raise CrdError("`go` is not on PATH; it fetches the upstream CRDs (go mod download)")
    versions.cache_root().mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [go, "mod", "download", "-json", module],
        cwd=versions.cache_root(),
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        info = json.loads(done.stdout)
    except json.JSONDecodeError:
        info = {}
    if done.returncode != 0 or info.get("Error") or "Dir" not in info:
        raise CrdError(
            f"go mod download {module} failed: {info.get('Error') or done.stderr.strip()}"
        )
    return Path(info["Dir"])
