"""The test ground's node: how long a cluster with a node takes to come up and go down, what it
costs at idle, and how fast a pod of each image starts.

    python -m bench.node [--pods 3] [--idle-seconds 20]

Figures: cluster start (namespace, control plane, node Ready, images loaded) and stop; idle
RSS and CPU of every process of the node (the daemons in its namespace, the pods in its
cgroup); pod start latency, create -> Running, for the runtime and Spark images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client, utils

from bench.procstat import cpu_seconds, rss_mib
from quantcore.devcluster import cgroups, cluster, images, netns


def node_processes(directory: Path) -> set[int]:
    state = json.loads((directory / cluster.NODE_STATE).read_text())
    namespace = netns.NodeNamespace(state["holder"], state["net_inode"])
    return set(netns.members(namespace)) | cgroups.members(state["cgroup"])


def idle_cost(directory: Path, seconds: float) -> tuple[float, float]:
    """(RSS MiB summed over the node's processes, CPU % of one core over `seconds`)."""
    pids = node_processes(directory)
    before = {pid: cpu_seconds(pid) for pid in pids}
    time.sleep(seconds)  # the measurement window itself, not a wait for a condition
    after = {pid: cpu_seconds(pid) for pid in pids if Path(f"/proc/{pid}").exists()}
    used = sum(after[pid] - before[pid] for pid in after)
    rss = sum(rss_mib(pid)[0] for pid in after)
    return rss, 100 * used / seconds


def pod_start_seconds(api: client.ApiClient, image: str, command: list[str], name: str) -> float:
    core = client.CoreV1Api(api)
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {"name": "main", "image": image, "imagePullPolicy": "Never", "command": command}
            ],
        },
    }
    started = time.monotonic()
    utils.create_from_dict(api, manifest, namespace="default")
    while True:
        pod: Any = core.read_namespaced_pod(name, "default")
        if pod.status.phase == "Running":
            elapsed = time.monotonic() - started
            break
        if pod.status.phase in ("Failed", "Succeeded"):
            raise RuntimeError(f"pod {name} ended before it was seen running: {pod.status}")
        time.sleep(0.02)
    core.delete_namespaced_pod(name, "default", grace_period_seconds=0)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=3, help="pods started per image")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = parser.parse_args()

    built = images.build_all()
    with tempfile.TemporaryDirectory(prefix="bench-node-") as work:
        directory = Path(work) / "cluster"
        started = time.monotonic()
        running = cluster.start(directory, with_node=True, images=list(built.values()))
        up = time.monotonic() - started
        try:
            rss, cpu = idle_cost(directory, args.idle_seconds)
            latencies: dict[str, list[float]] = {"runtime": [], "spark": []}
            commands = {
                "runtime": ["python3", "-c", "import time; time.sleep(3600)"],
                "spark": ["sleep", "3600"],
            }
            with client.ApiClient(_configuration(running.kubeconfig)) as api:
                for round_ in range(args.pods):
                    for name, command in commands.items():
                        latencies[name].append(
                            pod_start_seconds(api, built[name].ref, command, f"{name}-{round_}")
                        )
        finally:
            stopping = time.monotonic()
            cluster.stop(directory)
            down = time.monotonic() - stopping
    print(f"cluster with a node up (images loaded): {up:.1f} s; down: {down:.1f} s")
    print(f"node at idle: {rss:.0f} MiB RSS, {cpu:.1f}% of one core over {args.idle_seconds:.0f} s")
    for name, values in latencies.items():
        print(
            f"pod start, create -> Running, {name} image: median {statistics.median(values):.2f} s"
            f" (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"
        )


def _configuration(kubeconfig: Path) -> client.Configuration:
    from kubernetes import config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return configuration


if __name__ == "__main__":
    main()
