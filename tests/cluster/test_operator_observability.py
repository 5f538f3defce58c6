"""The operator's dashboard and alerts against real systems: `quantcore operator
--metrics-port` watching a namespace of the test ground's real kube-apiserver and
controller-manager (no node: pods stay Pending) with a real Kafka, and a real Prometheus
(Debian's binary, quantcore.devservices.prometheus) scraping it every second on loopback with
the chart's alert rules loaded.

`quantcore up` runs no operator, so the one-machine e2e (tests/e2e/test_observability.py)
leaves the operator dashboard to this test: every one of its queries must return series, and
the reshard, universe, handover and children series must carry what the API server holds.
The operator's alerts are driven to pending: QuantCoreReconcileFailing by a namespace whose
ResourceQuota admits no Deployment (the API server refuses the feed shards),
QuantCoreFeedShardsMissing by shards planned with no shard pod scraped (there is no node),
QuantCoreTargetDown by killing the operator.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from quantcore.devservices.kafka import KafkaBroker
from quantcore.devservices.ports import LOOPBACK, free_port
from quantcore.devservices.prometheus import PrometheusServer, ScrapeTarget, alerts, query, targets
from quantcore.operator.applier import Kube
from quantcore.operator.metrics import routing_change
from tests.cluster.marketfeeds import (
    FEED,
    SYMBOLS,
    OperatorProcess,
    apply,
    children,
    converged,
    feed_object,
    feed_topics,
    kubectl,
    manifest,
    routing,
    wait_for,
)
from tests.dashboards import DASHBOARDS, PROVEN_ON_A_CLUSTER, RULES, panel_queries

pytestmark = pytest.mark.cluster

DASHBOARD = DASHBOARDS / "operator.json"
# Prometheus scrapes and evaluates the rules every second, so the waits below are short.
INTERVAL = "1s"
QUOTA = "no-deployments"


@dataclass(frozen=True)
class Watched:
    """The operator process and the URL of the Prometheus scraping it."""

    operator: OperatorProcess
    prometheus: str


@pytest.fixture
def watched_operator(
    crd_installed: Path, namespace: str, kafka_service: KafkaBroker, tmp_path: Path
) -> Iterator[Watched]:
    port = free_port()
    kafka_service.grant(feed_topics(namespace))  # the feed's users' ACLs
    operator = OperatorProcess(
        crd_installed,
        namespace,
        tmp_path / "operator.log",
        metrics_port=port,
        kafka_auth=kafka_service.auth("operator"),
    )
    prometheus = PrometheusServer(
        tmp_path / "prometheus",
        [ScrapeTarget("operator", f"{LOOPBACK}:{port}")],
        rule_files=[RULES],
        scrape_interval=INTERVAL,
        evaluation_interval=INTERVAL,
        die_with_parent=True,
    )
    operator.start()
    try:
        url = prometheus.start()

        def operator_scraped() -> bool:
            operator.check()  # an operator that died says why, instead of a timeout
            return any(t["health"] == "up" for t in targets(url))

        wait_for("Prometheus scraping the operator's /metrics", operator_scraped)
        yield Watched(operator, url)
    finally:
        prometheus.stop()
        operator.stop(timeout=10)
        sys.stderr.write(f"--- operator log tail ---\n{operator.tail()}\n")


def feed_series(namespace: str, extra: str = "") -> str:
    """The label matchers of one MarketFeed's series (the operator labels them with the
    feed's namespace as marketfeed_namespace)."""
    return f'{{marketfeed_namespace="{namespace}",marketfeed="{FEED}"{extra}}}'


def scalar(url: str, expr: str) -> float | None:
    """The value of the one series `expr` selects, None when it selects none."""
    found = query(url, expr)
    assert len(found) <= 1, f"{expr}: {found}"
    return float(found[0]["value"][1]) if found else None


def alert(url: str, name: str, **labels: str) -> dict[str, Any] | None:
    """The pending or firing alert `name` whose labels include `labels`, if any."""
    return next(
        (
            a
            for a in alerts(url)
            if a["labels"].get("alertname") == name
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ),
        None,
    )


def kinds_in_api_server(kube: Kube, namespace: str) -> dict[str, int]:
    return dict(Counter(name.split("/")[0] for name in children(kube, namespace)))


def kinds_in_prometheus(url: str, namespace: str) -> dict[str, int]:
    found = query(url, f"quantcore_operator_children{feed_series(namespace)}")
    return {s["metric"]["kind"]: int(float(s["value"][1])) for s in found}


def test_operator_dashboard_answers_and_follows_a_reshard(
    kube: Kube,
    watched_operator: Watched,
    namespace: str,
    kafka_bootstrap: str,
    crd_installed: Path,
) -> None:
    url = watched_operator.prometheus
    assert PROVEN_ON_A_CLUSTER[DASHBOARD.name] == "tests/cluster/" + Path(__file__).name
    wanted = panel_queries(DASHBOARD)
    assert wanted, "the operator dashboard has no queries"

    applied = time.monotonic()
    apply(crd_installed, manifest(namespace, kafka_bootstrap, SYMBOLS[:30]))
    wait_for("status of 30 symbols", converged(kube, namespace, 30))
    t30 = routing(kube, namespace)
    missing = list(wanted)

    def every_panel_answers() -> bool:
        nonlocal missing
        missing = [(title, expr) for title, expr in missing if not query(url, expr)]
        return not missing

    try:
        wait_for("every operator dashboard query returning series", every_panel_answers)
    except AssertionError:
        pytest.fail("panels without series:\n" + "\n".join(f"{t}: {e}" for t, e in missing))
    print(
        f"all {len(wanted)} operator dashboard queries returned series "
        f"{time.monotonic() - applied:.1f}s after the MarketFeed was applied"
    )

    # No node runs the planned shards, so none is scraped: the plan-versus-targets alert
    # sees the gap and goes pending for the feed's namespace.
    shards_missing = wait_for(
        "QuantCoreFeedShardsMissing for the feed's namespace",
        lambda: alert(url, "QuantCoreFeedShardsMissing", namespace=namespace),
        timeout=30,
    )
    assert shards_missing["state"] == "pending"
    assert float(shards_missing["value"]) == t30.shards

    # Reshard 30 -> 20 symbols: shard 2 is no longer needed, so its kept symbols move to the
    # other two; with no shard pod to report them live they are released at the timeout.
    resharded = time.monotonic()
    apply(crd_installed, manifest(namespace, kafka_bootstrap, SYMBOLS[:20]))
    wait_for("status of 20 symbols", converged(kube, namespace, 20))
    t20 = routing(kube, namespace)
    change = routing_change(t30, t20)
    assert change.moved, "this reshard was meant to move symbols between shards"
    wait_for(
        "the drained shard pruned",
        lambda: "Deployment/mf-feed-2" not in children(kube, namespace),
        timeout=90,
    )

    series = feed_series(namespace)
    added, removed = (feed_series(namespace, f',change="{c}"') for c in ("added", "removed"))
    expected = {
        f"quantcore_operator_reshard_moves_total{series}": len(change.moved),
        f"quantcore_operator_handover_timeouts_total{series}": len(change.moved),
        f"quantcore_operator_universe_changes_total{added}": 30,
        f"quantcore_operator_universe_changes_total{removed}": 30 - 20,
        f"quantcore_operator_routed_symbols{series}": len(t20.routes),
        f"quantcore_operator_shards{series}": t20.shards,
        f"quantcore_operator_routing_version{series}": t20.version,
    }
    seen: dict[str, float | None] = {}

    def metrics_match() -> bool:
        seen.update({expr: scalar(url, expr) for expr in expected})
        return all(seen[expr] == value for expr, value in expected.items())

    try:
        wait_for("the operator's metrics after the reshard", metrics_match, timeout=30)
    except AssertionError:
        pytest.fail(
            "\n".join(f"{e}: want {v}, Prometheus has {seen[e]}" for e, v in expected.items())
        )
    print(
        f"reshard 30 -> 20: {len(change.moved)} moves, handovers timed out and the drained "
        f"shard pruned, all in Prometheus {time.monotonic() - resharded:.1f}s after the apply"
    )

    # Children by kind: what the operator reports is what the API server holds.
    in_api: dict[str, int] = {}
    in_prometheus: dict[str, int] = {}

    def children_agree() -> bool:
        in_api.update(kinds_in_api_server(kube, namespace))
        in_prometheus.clear()
        in_prometheus.update(kinds_in_prometheus(url, namespace))
        return in_prometheus == in_api

    try:
        wait_for("children by kind in Prometheus and the API server", children_agree, timeout=30)
    except AssertionError:
        pytest.fail(f"children by kind: API server {in_api}, Prometheus {in_prometheus}")
    assert in_api["Deployment"] == t20.shards + 1  # the shards and serving
    ok = scalar(url, 'quantcore_operator_reconciles_total{outcome="ok"}')
    assert (ok or 0) >= 2
    assert scalar(url, 'quantcore_operator_reconciles_total{outcome="error"}') == 0

    # An operator that stops answering scrapes is alerted on.
    watched_operator.operator.kill()
    killed = time.monotonic()
    target_down = wait_for(
        "QuantCoreTargetDown for the operator",
        lambda: alert(url, "QuantCoreTargetDown", job="operator"),
        timeout=30,
    )
    assert target_down["state"] == "pending"
    print(f"operator killed: QuantCoreTargetDown pending after {time.monotonic() - killed:.1f}s")


def test_refused_reconciles_make_reconcile_failing_pending(
    kube: Kube,
    watched_operator: Watched,
    namespace: str,
    kafka_bootstrap: str,
    crd_installed: Path,
) -> None:
    url = watched_operator.prometheus
    # A namespace quota of zero Deployments: the API server refuses every feed shard and the
    # serving Deployment, so each reconcile ends blocked and is retried.
    apply(
        crd_installed,
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": QUOTA, "namespace": namespace},
            "spec": {"hard": {"count/deployments.apps": "0"}},
        },
    )
    wait_for(
        "the quota's usage computed by the controller-manager",
        lambda: (
            "count/deployments.apps"
            in (
                (
                    kube.request("GET", f"/api/v1/namespaces/{namespace}/resourcequotas/{QUOTA}")
                    or {}
                )
                .get("status", {})
                .get("used", {})
            )
        ),
    )
    applied = time.monotonic()
    apply(crd_installed, manifest(namespace, kafka_bootstrap, SYMBOLS[:10]))

    def degraded() -> dict[str, Any] | None:
        found = ((feed_object(kube, namespace) or {}).get("status") or {}).get("conditions", [])
        return next((c for c in found if c["type"] == "Degraded" and c["status"] == "True"), None)

    condition = wait_for("the MarketFeed Degraded", degraded)
    assert condition["reason"] == "Forbidden", condition
    assert "exceeded quota" in condition["message"], condition

    failing = wait_for("QuantCoreReconcileFailing", lambda: alert(url, "QuantCoreReconcileFailing"))
    assert failing["state"] == "pending"
    print(
        f"reconciles refused by the quota: QuantCoreReconcileFailing pending "
        f"{time.monotonic() - applied:.1f}s after the MarketFeed was applied"
    )
    retries = scalar(url, 'quantcore_operator_reconciles_total{outcome="retry"}')
    assert (retries or 0) >= 1
    assert scalar(url, 'quantcore_operator_reconciles_total{outcome="ok"}') == 0

    # Lift the quota: the next retry succeeds and the alert clears.
    kubectl(crd_installed, "delete", "resourcequota", QUOTA, "-n", namespace)
    lifted = time.monotonic()
    wait_for("status of 10 symbols", converged(kube, namespace, 10), timeout=90)
    wait_for(
        "QuantCoreReconcileFailing clearing",
        lambda: alert(url, "QuantCoreReconcileFailing") is None,
        timeout=30,
    )
    print(f"quota lifted: QuantCoreReconcileFailing cleared {time.monotonic() - lifted:.1f}s later")
    ok = scalar(url, 'quantcore_operator_reconciles_total{outcome="ok"}')
    assert (ok or 0) >= 1
