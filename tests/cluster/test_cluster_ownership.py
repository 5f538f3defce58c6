"""`python -m quantcore.devcluster` (what `make cluster-up`/`cluster-down` run) refuses a
directory or kubeconfig of the user's own and leaves it untouched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from quantcore.devcluster import binaries

pytestmark = pytest.mark.cluster


def devcluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quantcore.devcluster", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_up_refuses_a_users_directory(tmp_path: Path, kube_binaries: binaries.Binaries) -> None:
    directory = tmp_path / "mine"
    directory.mkdir()
    (directory / "thesis.tex").write_text("years of work")
    done = devcluster("up", "--dir", str(directory), "--kubeconfig", str(tmp_path / "kc"))
    assert done.returncode == 2, done.stderr
    assert f"refusing to use {directory}" in done.stderr
    assert "--dir" in done.stderr
    assert "CLUSTER_DIR" in done.stderr
    assert sorted(p.name for p in directory.iterdir()) == ["thesis.tex"]
    assert (directory / "thesis.tex").read_text() == "years of work"
    assert not (tmp_path / "kc").exists()


def test_up_refuses_to_replace_a_users_kubeconfig(
    tmp_path: Path, kube_binaries: binaries.Binaries
) -> None:
    users = tmp_path / "config"
    users.write_text("apiVersion: v1\nkind: Config\n")
    done = devcluster("up", "--dir", str(tmp_path / "cluster"), "--kubeconfig", str(users))
    assert done.returncode == 2, done.stderr
    assert f"refusing to use {users}" in done.stderr
    assert "--kubeconfig" in done.stderr
    assert users.read_text() == "apiVersion: v1\nkind: Config\n"
    # Refused before any process started: nothing to stop, no state recorded.
    assert not (tmp_path / "cluster" / "state.json").exists()


def test_down_leaves_a_users_directory_alone(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"pids": {"etcd": 999999}}))
    done = devcluster("down", "--dir", str(tmp_path))
    assert done.returncode == 0
    assert "no cluster recorded" in done.stdout
    assert json.loads(state.read_text()) == {"pids": {"etcd": 999999}}
