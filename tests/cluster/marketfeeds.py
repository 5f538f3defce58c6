"""The MarketFeed operator as cluster tests drive it: `quantcore operator` as a process, a
MarketFeed manifest, `kubectl apply`, and reading back what the operator wrote (status,
children, routing table). tests/cluster/test_operator.py and
tests/cluster/test_operator_observability.py share it; their fixtures are in conftest.py.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from quantcore.devservices.process import ChildProcess
from quantcore.devservices.programs import child_env, quantcore_argv
from quantcore.events import Topics
from quantcore.kafkaauth import KafkaAuth
from quantcore.operator import planner, rbac
from quantcore.operator.api import MarketFeed, MarketFeedSpec
from quantcore.operator.applier import Kube
from quantcore.routing import CONFIGMAP_KEY, RoutingTable

ROOT = Path(__file__).parents[2]
CRD = ROOT / "crds" / "marketfeed.yaml"
SYMBOLS = [f"A{i:03d}USDT" for i in range(120)]
FEED = "mf"
T = TypeVar("T")


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def install_crd(kubeconfig: Path) -> None:
    """The MarketFeed CRD applied and Established."""
    kubectl(
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=quantcore-tests",
        "-f",
        str(CRD),
    )
    kubectl(
        kubeconfig,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/marketfeeds.quantcore.io",
    )


class OperatorProcess(ChildProcess):
    """`quantcore operator` as a subprocess watching one namespace (serving /metrics on
    `metrics_port` when given)."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        log: Path,
        metrics_port: int | None = None,
        *,
        kafka_auth: KafkaAuth | None = None,
    ) -> None:
        # No shard pod runs here to report /live: a moving symbol is let go after 5 s.
        args = ["operator", "--kubeconfig", str(kubeconfig), "--namespace", namespace]
        args += ["--handover-timeout", "5"]
        if metrics_port is not None:
            args += ["--metrics-port", str(metrics_port)]
        # Its own Kafka user (the `operator` of quantcore.kafkaacl), as the chart gives it.
        env = child_env(kafka=kafka_auth)
        super().__init__("operator", quantcore_argv(*args), log, cwd=ROOT, env=env)


def manifest(namespace: str, bootstrap: str, symbols: list[str], **spec: Any) -> dict[str, Any]:
    prefix = f"{namespace}"
    body: dict[str, Any] = {
        "image": "ghcr.io/quantcore/quantcore:0.1.0",
        "symbols": symbols,
        "sharding": {"symbolsPerShard": 10},
        "kafka": {
            "bootstrap": bootstrap,
            "partitions": 8,
            "topics": {
                "raw": f"{prefix}.raw",
                "book": f"{prefix}.book",
                "trades": f"{prefix}.trades",
                "quarantine": f"{prefix}.quarantine",
                "flow": f"{prefix}.flow",
            },
            # Secure by default: SASL_SSL users and the CA from Secrets (the pods never start
            # here: no node; the operator uses its own user, OperatorProcess's kafka_auth).
            "credentials": {
                "feedSecretName": "mf-kafka-feed",
                "streamSecretName": "mf-kafka-stream",
            },
            "caSecretName": "mf-kafka-ca",
        },
        # Secure by default: TLS and tokens from Secrets (the pods never start here: no node).
        "spark": {"image": "ghcr.io/quantcore/quantcore-spark:0.1.0"},
        "serving": {
            "autoscaling": {"minReplicas": 2, "maxReplicas": 4},
            "tls": {"secretName": "mf-serving-tls", "clientAuth": "require"},
            "auth": {"tokensSecret": "mf-serving-tokens"},
        },
        "monitoring": {"serviceMonitor": True},
    }
    for key, value in spec.items():
        body[key] = value if not isinstance(value, dict) else {**body.get(key, {}), **value}
    return {
        "apiVersion": "quantcore.io/v1alpha1",
        "kind": "MarketFeed",
        "metadata": {"name": FEED, "namespace": namespace},
        "spec": body,
    }


def feed_topics(namespace: str) -> Topics:
    """The topics `manifest(namespace, ...)` names: what the broker's ACLs must grant."""
    return Topics.with_prefix(namespace)


def apply(kubeconfig: Path, doc: dict[str, Any]) -> None:
    kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(doc))


def feed_object(kube: Kube, namespace: str) -> dict[str, Any] | None:
    return kube.request(
        "GET", f"/apis/quantcore.io/v1alpha1/namespaces/{namespace}/marketfeeds/{FEED}"
    )


def converged(kube: Kube, namespace: str, symbols: int) -> Callable[[], dict[str, Any] | None]:
    """Probe: the MarketFeed's status reflects its current generation and symbol count."""

    def probe() -> dict[str, Any] | None:
        obj = feed_object(kube, namespace)
        st = (obj or {}).get("status") or {}
        gen = (obj or {}).get("metadata", {}).get("generation")
        if st.get("observedGeneration") == gen and st.get("symbols") == symbols:
            return obj
        return None

    return probe


def children(kube: Kube, namespace: str) -> dict[str, dict[str, Any]]:
    """`Kind/name` -> object, for every object in the API server labelled with the feed."""
    out = {}
    for resource in rbac.CHILDREN:
        listing = kube.request(
            "GET",
            resource.path(namespace),
            query=[("labelSelector", f"{planner.FEED_LABEL}={FEED}")],
        )
        for item in (listing or {}).get("items", []):
            out[f"{resource.kind}/{item['metadata']['name']}"] = item
    return out


def expected_names(doc: dict[str, Any], namespace: str, table: RoutingTable) -> set[str]:
    feed = MarketFeed(
        name=FEED,
        namespace=namespace,
        uid="x",
        generation=1,
        spec=MarketFeedSpec.model_validate(doc["spec"]),
    )
    return set(planner.plan(feed, table, list(table.symbols)).names())


def routing(kube: Kube, namespace: str) -> RoutingTable:
    cm = kube.request(
        "GET", f"/api/v1/namespaces/{namespace}/configmaps/{planner.routing_configmap_name(FEED)}"
    )
    assert cm is not None
    return RoutingTable.from_json(cm["data"][CONFIGMAP_KEY])
