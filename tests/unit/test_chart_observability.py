"""The chart's observability: alert rules and dashboards rendered from their one source, and
ServiceMonitors (with the operator's planned Services) that reach every component's metrics."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType
from typing import Any

import yaml

from quantcore.operator import planner
from tests.chart import CHART, ROOT, of_kind, render

RULES = CHART / "files" / "alerts" / "quantcore-rules.yaml"
DASHBOARDS = CHART / "files" / "dashboards"


def dashboards_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboards", ROOT / "charts" / "dashboards.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_prometheus_rule_is_optional_and_is_the_rule_file() -> None:
    assert not of_kind(render(), "PrometheusRule")
    (rule,) = of_kind(
        render({"prometheusRule.enabled": True, "prometheusRule.labels.release": "kp"}),
        "PrometheusRule",
    )
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kp"
    # Rendered from the file promtool tests, not a copy of it.
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert {"QuantCoreFeedShardNotLive", "QuantCoreLatencyBudgetFastBurn"} <= alerts


def test_dashboards_are_optional_sidecar_configmaps_of_the_stored_files() -> None:
    assert not [c for c in of_kind(render(), "ConfigMap") if "dashboard" in c["metadata"]["name"]]
    maps = [
        c
        for c in of_kind(render({"dashboards.enabled": True}), "ConfigMap")
        if "-dashboard-" in c["metadata"]["name"]
    ]
    files = {f.name: f for f in DASHBOARDS.glob("*.json")}
    assert len(maps) == len(files) >= 6
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((name, text),) = cm["data"].items()
        assert json.loads(text) == json.loads(files[name].read_text())


def test_stored_dashboards_are_what_the_generator_writes() -> None:
    generated = dashboards_module().files()
    stored = {f.name: f.read_text() for f in DASHBOARDS.glob("*.json")}
    assert stored == generated, "stale dashboards: run `make chart-dashboards`"


def test_dashboard_panels_carry_a_query_and_unique_ids() -> None:
    for text in dashboards_module().files().values():
        doc = json.loads(text)
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids))
        for panel in doc["panels"]:
            if panel["type"] != "row":
                assert panel["targets"], panel["title"]
                assert all(
                    t["expr"].startswith(("sum", "histogram", "quantcore", "1 -", "time", "count"))
                    for t in panel["targets"]
                )


def test_the_operator_serves_metrics_to_its_own_service_monitor() -> None:
    objects = render({"serviceMonitor.enabled": True})
    (deployment,) = of_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert "--metrics-port=9090" in container["args"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    (service,) = [
        s
        for s in of_kind(objects, "Service")
        if s["metadata"]["name"].endswith("-operator-metrics")
    ]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (monitor,) = [
        m for m in of_kind(objects, "ServiceMonitor") if m["metadata"]["name"].endswith("-operator")
    ]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # Its NetworkPolicy lets scrapes in on that port.
    (policy,) = [
        p for p in of_kind(objects, "NetworkPolicy") if p["metadata"]["name"].endswith("-operator")
    ]
    assert {"port": "metrics", "protocol": "TCP"} in policy["spec"]["ingress"][0]["ports"]


def planned(kind: str) -> list[dict[str, Any]]:
    feed = planner.sample_feed()
    return [
        o for o in planner.plan(feed, None, ["BTCUSDT", "ETHUSDT"]).objects if o["kind"] == kind
    ]


def test_the_spark_driver_serves_the_relays_metrics_behind_a_scraped_service() -> None:
    (app,) = planned("SparkApplication")
    args = app["spec"]["arguments"]
    assert args[args.index("--metrics-port") + 1] == str(planner.METRICS_PORT)
    driver = app["spec"]["driver"]["template"]
    (container,) = driver["spec"]["containers"]
    assert container["ports"] == [{"name": "metrics", "containerPort": planner.METRICS_PORT}]
    executor = app["spec"]["executor"]["template"]
    assert "ports" not in executor["spec"]["containers"][0]
    (service,) = [
        s
        for s in planned("Service")
        if s["metadata"]["name"] == planner.stream_metrics_service_name("demo")
    ]
    selector = dict(service["spec"]["selector"])
    assert selector.pop("spark-role") == "driver"  # Spark's own label: executors stay out
    assert selector.items() <= driver["metadata"]["labels"].items()
    # The chart's workloads ServiceMonitor selects it: the feed label and a `metrics` port.
    assert planner.FEED_LABEL in service["metadata"]["labels"]
    assert service["spec"]["ports"][0]["name"] == "metrics"
