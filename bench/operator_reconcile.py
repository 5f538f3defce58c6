"""Operator latency on a real kube-apiserver and Kafka: `kubectl apply` of a MarketFeed ->
every child created, and a 30 -> 100 symbol reshard -> converged. Goal: at most 2 s each.

    python -m bench.operator_reconcile [--rounds 3]

It starts its own control plane (or reuses $QUANTCORE_KUBECONFIG) and Kafka broker, runs the
operator as a real process (`quantcore operator`), and also times the bare reconcile function
in-process, so the gap between the two is kopf's watch-and-dispatch overhead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from quantcore.devcluster import binaries, controlplane, crds
from quantcore.devservices.kafka import KafkaBroker
from quantcore.events import Topics
from quantcore.kafkaacl import OPERATOR
from quantcore.operator import planner, rbac
from quantcore.operator.applier import Kube
from quantcore.operator.reconcile import reconcile

ROOT = Path(__file__).parents[1]
SYMBOLS = [f"B{i:03d}USDT" for i in range(100)]
POLL_S = 0.01
# Children of a 30-symbol feed: routing ConfigMap, 3 x (shard ConfigMap + Deployment), feed
# Service, Redis StatefulSet + Service, SparkApplication, serving Deployment/Service/PDB/HPA.
EXPECTED_30 = 1 + 3 * 2 + 1 + 2 + 1 + 4


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> None:
    subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def feed_doc(name: str, namespace: str, bootstrap: str, symbols: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "quantcore.io/v1alpha1",
        "kind": "MarketFeed",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "image": "ghcr.io/quantcore/quantcore:0.1.0",
            "symbols": symbols,
            "sharding": {"symbolsPerShard": 10},
            "kafka": {
                "bootstrap": bootstrap,
                "partitions": 8,
                "topics": {
                    k: f"{namespace}.{name}.{k}"
                    for k in ("raw", "book", "trades", "quarantine", "flow")
                },
                # Secure by default (the pods never start here; the operator has its own user).
                "credentials": {
                    "feedSecretName": f"{name}-kafka-feed",
                    "streamSecretName": f"{name}-kafka-stream",
                },
                "caSecretName": f"{name}-kafka-ca",
            },
            "spark": {"image": "ghcr.io/quantcore/quantcore-spark:0.1.0"},
            "serving": {"autoscaling": {"minReplicas": 2, "maxReplicas": 4}},
        },
    }


def wait(probe: Callable[[], bool], timeout: float = 60.0) -> float:
    start = time.perf_counter()
    while not probe():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("not converged")
        time.sleep(POLL_S)
    return time.perf_counter() - start


def child_names(kube: Kube, namespace: str, name: str) -> set[str]:
    out = set()
    for r in rbac.CHILDREN:
        listing = kube.request(
            "GET", r.path(namespace), query=[("labelSelector", f"{planner.FEED_LABEL}={name}")]
        )
        out |= {f"{r.kind}/{i['metadata']['name']}" for i in (listing or {}).get("items", [])}
    return out


def status_of(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    obj = kube.request(
        "GET", f"/apis/quantcore.io/v1alpha1/namespaces/{namespace}/marketfeeds/{name}"
    )
    return (obj or {}).get("status") or {}


def operator_round(
    kubeconfig: Path, kube: Kube, bootstrap: str, namespace: str, name: str
) -> tuple[float, float]:
    """One create and one reshard through the operator process; seconds each."""
    t0 = time.perf_counter()
    doc = feed_doc(name, namespace, bootstrap, SYMBOLS[:30])
    kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(doc))
    wait(lambda: len(child_names(kube, namespace, name)) >= EXPECTED_30)
    create = time.perf_counter() - t0
    wait(lambda: status_of(kube, namespace, name).get("symbols") == 30)
    t0 = time.perf_counter()
    doc = feed_doc(name, namespace, bootstrap, SYMBOLS)
    kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(doc))
    wait(
        lambda: (
            status_of(kube, namespace, name).get("symbols") == 100
            and len(child_names(kube, namespace, name)) >= EXPECTED_30 + 14
        )
    )
    return create, time.perf_counter() - t0


def via_operator(
    kubeconfig: Path, kube: Kube, bootstrap: str, rounds: int
) -> tuple[list[float], list[float]]:
    create, reshard = [], []
    namespace = "bench-operator"
    kubectl(kubeconfig, "create", "namespace", namespace)
    log = tempfile.NamedTemporaryFile(prefix="qc-operator-", suffix=".log", delete=False)  # noqa: SIM115 - closed below
    op = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "quantcore.cli",
            "operator",
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            namespace,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(3)  # let kopf start its watches
        for i in range(rounds):
            took_create, took_reshard = operator_round(
                kubeconfig, kube, bootstrap, namespace, f"feed{i}"
            )
            create.append(took_create)
            reshard.append(took_reshard)
    finally:
        op.terminate()
        op.wait(timeout=10)
        log.close()
    return create, reshard


def in_process(
    kubeconfig: Path, kube: Kube, bootstrap: str, rounds: int
) -> tuple[list[float], list[float]]:
    """The reconcile function alone (no kopf, no kubectl): the floor the operator sits on."""
    create, reshard = [], []
    namespace = "bench-direct"
    kubectl(kubeconfig, "create", "namespace", namespace)
    for i in range(rounds):
        name = f"feed{i}"
        kubectl(
            kubeconfig,
            "apply",
            "-f",
            "-",
            stdin=yaml.safe_dump(feed_doc(name, namespace, bootstrap, SYMBOLS[:30])),
        )
        path = f"/apis/quantcore.io/v1alpha1/namespaces/{namespace}/marketfeeds/{name}"
        body = kube.request("GET", path)
        assert body is not None
        t0 = time.perf_counter()
        reconcile(kube, body)
        create.append(time.perf_counter() - t0)
        kubectl(
            kubeconfig,
            "apply",
            "-f",
            "-",
            stdin=yaml.safe_dump(feed_doc(name, namespace, bootstrap, SYMBOLS)),
        )
        body = kube.request("GET", path)
        assert body is not None
        t0 = time.perf_counter()
        reconcile(kube, body)
        reshard.append(time.perf_counter() - t0)
    return create, reshard


def fmt(xs: list[float]) -> str:
    return f"median {statistics.median(xs) * 1000:7.0f} ms   max {max(xs) * 1000:7.0f} ms   (n={len(xs)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qc-bench-op-") as tmp:
        work = Path(tmp)
        reuse = os.environ.get("QUANTCORE_KUBECONFIG")
        plane_dir = work / "cluster"
        if reuse:
            kubeconfig = Path(reuse)
        else:
            kubeconfig = controlplane.start(
                plane_dir, binaries.ensure_all(), die_with_parent=True
            ).kubeconfig
        try:
            kube = Kube(str(kubeconfig))
            crds.install(kube._api, crds.third_party_crd_paths())
            kubectl(
                kubeconfig,
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                str(ROOT / "crds" / "marketfeed.yaml"),
            )
            kubectl(
                kubeconfig, "wait", "--for=condition=Established", "crd/marketfeeds.quantcore.io"
            )
            broker = KafkaBroker(
                work / "kafka",
                # The operator user's ACLs on each namespace's topics (`<ns>.<feed>.<kind>`).
                feeds=[Topics.with_prefix("bench-direct"), Topics.with_prefix("bench-operator")],
            )
            bootstrap = broker.start()
            # Reconcile (in this process and in the operator's) as the operator's Kafka user.
            os.environ.update(broker.auth(OPERATOR).env())
            try:
                d_create, d_reshard = in_process(kubeconfig, kube, bootstrap, args.rounds)
                o_create, o_reshard = via_operator(kubeconfig, kube, bootstrap, args.rounds)
            finally:
                broker.stop()
        finally:
            if not reuse:
                controlplane.stop(plane_dir)
    print("operator reconcile on a real kube-apiserver + Kafka (goal <= 2000 ms each)")
    print(f"  apply -> all children created (operator process): {fmt(o_create)}")
    print(f"  reshard 30 -> 100 -> converged (operator process): {fmt(o_reshard)}")
    print(f"  baseline: reconcile() alone, create (30 symbols):  {fmt(d_create)}")
    print(f"  baseline: reconcile() alone, reshard 30 -> 100:    {fmt(d_reshard)}")


if __name__ == "__main__":
    main()
