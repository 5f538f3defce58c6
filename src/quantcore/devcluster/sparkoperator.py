"""The kubeflow spark-operator binary (controller and webhook), built from its Go module at the
version whose CRDs the test ground installs, once per version.

Its go.mod pins every k8s.io/* module with replace directives, which a module that merely
requires it does not inherit: the wrapper module copies them (the same wrapper approach as
binaries.py uses for Kubernetes).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

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
