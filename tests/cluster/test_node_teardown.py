"""Stopping a cluster with a node leaves nothing behind: no process, mount, network namespace,
interface, netfilter rule, cgroup or containerd state; and the host's own network and global
sysctls were never touched while it ran."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, utils

from quantcore.devcluster import cgroups, cluster, images, netns
from tests.fixtures.cluster import api_client

pytestmark = pytest.mark.cluster

GUARDED = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")


def _host_network() -> dict[str, str]:
    def run(*command: str) -> str:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
        return done.stdout if done.returncode == 0 else f"(exit {done.returncode})"

    return {
        "links": run("ip", "-o", "link"),
        "addresses": run("ip", "-o", "addr"),
        "routes": run("ip", "route", "show", "table", "all"),
        "iptables": _without_counters(run("iptables-save")),
        "nftables": run("nft", "list", "ruleset"),
        "netns": run("ip", "netns", "list"),
        "sysctls": "".join(Path("/proc/sys", name).read_text() for name in GUARDED),
    }


def _without_counters(rules: str) -> str:
    # iptables-save prints a timestamp and packet counters that move on their own.
    return "\n".join(line.split("[")[0] for line in rules.splitlines() if not line.startswith("#"))


def test_cluster_down_leaves_nothing_behind(
    built_images: dict[str, images.BuiltImage], tmp_path: Path
) -> None:
    pause = built_images["pause"]
    before = _host_network()
    directory = tmp_path / "cluster"
    started = cluster.start(
        directory,
        with_node=True,
        die_with_parent=True,
        images=[pause],
    )
    state = json.loads((directory / cluster.NODE_STATE).read_text())
    namespace = cluster.node_namespace(directory)
    try:
        with api_client(started.kubeconfig) as api:
            core = client.CoreV1Api(api)
            utils.create_from_dict(
                api,
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "idle"},
                    "spec": {
                        "containers": [
                            {"name": "idle", "image": pause.ref, "imagePullPolicy": "Never"}
                        ]
                    },
                },
                namespace="default",
            )
            deadline = time.monotonic() + 120
            while _phase(core, "idle") != "Running":
                assert time.monotonic() < deadline, "the idle pod never ran"
                time.sleep(0.2)
        # While it runs: the pod's process is in the node's cgroup, the daemons in its
        # namespace, and the host's network and sysctls are as they were.
        assert cgroups.members(state["cgroup"])
        assert len(netns.members(namespace)) > 3
        assert _host_network() == before
    finally:
        assert cluster.stop(directory)

    assert netns.members(namespace) == []
    assert not cgroups.exists(state["cgroup"])
    assert str(directory) not in Path("/proc/self/mountinfo").read_text()
    assert not (directory / "node" / "containerd").exists()
    assert not (directory / "node" / "kubelet").exists()
    assert _host_network() == before


def _phase(core: client.CoreV1Api, name: str) -> str:
    pod: Any = core.read_namespaced_pod(name, "default")
    return str(pod.status.phase)
