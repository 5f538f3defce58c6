"""The chart's Grafana dashboards and alert rules as tests read them: every panel's PromQL,
ready to send to a real Prometheus, and one alert rule by name. The one-machine e2e
(tests/e2e/test_observability.py) and the operator's cluster test
(tests/cluster/test_operator_observability.py) check the same queries through this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "charts" / "quantcore" / "files" / "dashboards"
RULES = ROOT / "charts" / "quantcore" / "files" / "alerts" / "quantcore-rules.yaml"
# Panels use Grafana's $__rate_interval; at a 1 s scrape, 30 s is well over four scrapes.
RATE_WINDOW = "30s"
# Dashboards whose series come from a process `quantcore up` does not run, and the test that
# runs it and checks every panel instead (the operator needs a Kubernetes API server).
PROVEN_ON_A_CLUSTER = {"operator.json": "tests/cluster/test_operator_observability.py"}


def panel_queries(path: Path) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel of one dashboard file."""
    doc = json.loads(path.read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", RATE_WINDOW))
        for panel in doc["panels"]
        for target in panel.get("targets", [])
    ]


def rule(name: str) -> dict[str, Any]:
    """The alert rule called `name` in the chart's rule file."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return next(r for g in groups for r in g["rules"] if r.get("alert") == name)


def seconds(duration: str) -> float:
    """A Prometheus duration of one unit ("30s", "5m", "1h") in seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]]
