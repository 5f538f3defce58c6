"""A throwaway Prometheus (Debian's binary) on a free loopback port, scraping given targets.

`PrometheusServer(workdir, targets, rule_files=...).start()` returns `http://127.0.0.1:PORT`
once `/-/ready` answers; `query` and `alerts` read its HTTP API. The configuration is built by
`prometheus_config` (pure). Its data lives in `workdir` and goes with it.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from quantcore.devservices.ports import LOOPBACK, free_port
from quantcore.devservices.process import ManagedService, ServiceError

INSTALL_HINT = "install Debian's prometheus package (apt-get install prometheus)"


@dataclass(frozen=True)
class ScrapeTarget:
    """One /metrics endpoint: `job` is the component (feed, stream, serve, replay, operator),
    which the alert rules and dashboards select by."""

    job: str
    address: str  # host:port
    labels: Mapping[str, str] = field(default_factory=dict)


def prometheus_config(
    targets: Sequence[ScrapeTarget],
    rule_files: Sequence[Path] = (),
    scrape_interval: str = "5s",
    evaluation_interval: str = "5s",
) -> dict[str, Any]:
    """prometheus.yml: one scrape job per component, each target with its own labels."""
    jobs: dict[str, list[dict[str, Any]]] = {}
    for target in targets:
        jobs.setdefault(target.job, []).append(
            {"targets": [target.address], "labels": dict(target.labels)}
        )
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": evaluation_interval,
        },
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": configs} for job, configs in jobs.items()
        ],
    }


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


class PrometheusServer(ManagedService):
    """One Prometheus living in `workdir`; stop() ends it."""

    def __init__(
        self,
        workdir: Path,
        targets: Sequence[ScrapeTarget],
        *,
        rule_files: Sequence[Path] = (),
        scrape_interval: str = "5s",
        evaluation_interval: str = "5s",
        port: int | None = None,
        die_with_parent: bool = False,
        start_timeout: float = 60.0,
    ) -> None:
        super().__init__(
            workdir, "prometheus.log", die_with_parent=die_with_parent, start_timeout=start_timeout
        )
        self.port = port or free_port()
        self.config = prometheus_config(targets, rule_files, scrape_interval, evaluation_interval)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> str:
        """Start Prometheus and wait until it is ready; returns its URL."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise ServiceError(f"prometheus is not installed: {INSTALL_HINT}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self._launch(
            "prometheus",
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={LOOPBACK}:{self.port}",
                "--storage.tsdb.retention.time=1d",
            ],
            self._ready,
            "ready",
        )
        return self.url

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        return query(self.url, expr)

    def alerts(self) -> list[dict[str, Any]]:
        return alerts(self.url)


def query(url: str, expr: str) -> list[dict[str, Any]]:
    """The series `expr` evaluates to now at the Prometheus at `url` (a scalar as one);
    ServiceError if Prometheus refuses the query."""
    try:
        answer = _get(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    except urllib.error.HTTPError as exc:  # 400 for a query that does not parse
        raise ServiceError(f"query {expr!r}: {exc.read().decode(errors='replace')}") from exc
    data = answer["data"]
    result = data["result"]
    return list(result) if data["resultType"] in ("vector", "matrix") else [{"value": result}]


def alerts(url: str) -> list[dict[str, Any]]:
    """Every pending or firing alert (labels, state, activeAt) at the Prometheus at `url`."""
    return list(_get(f"{url}/api/v1/alerts")["data"]["alerts"])


def targets(url: str) -> list[dict[str, Any]]:
    """The scrape targets and their health at the Prometheus at `url`."""
    return list(_get(f"{url}/api/v1/targets")["data"]["activeTargets"])
