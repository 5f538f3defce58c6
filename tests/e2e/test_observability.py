"""Observability end to end: `quantcore up --prometheus on` runs the pipeline with a real
Prometheus (Debian's binary, started by quantcore.devservices.prometheus) scraping every
process and loading the chart's alert rules. Every panel of every dashboard the chart ships
must return series from it, but the operator's: `up` runs no operator, so the cluster test
named in tests.dashboards.PROVEN_ON_A_CLUSTER checks those. Killing a feed shard must make its
QuantCoreFeedShardNotLive alert pending within the rule's window (read through Prometheus's
HTTP API), then clear once local mode has restarted the shard.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from quantcore.devservices.prometheus import alerts, query, targets
from tests.dashboards import DASHBOARDS, PROVEN_ON_A_CLUSTER, panel_queries, rule, seconds
from tests.e2e.test_up import Output, alive, descendants, start_up

pytestmark = pytest.mark.e2e

READY = re.compile(r"READY .* grpc (\S+), kafka (\S+), redis (\S+), prometheus (\S+)")
# Short, so the test's waits are short: Prometheus scrapes and evaluates the rules every second.
INTERVAL = "1s"

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], what: str, timeout: float) -> T:
    """`probe()`'s first truthy answer; fails with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        answer = probe()
        if answer:
            return answer
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.5)


class Up:
    def __init__(self, proc: subprocess.Popen[str], out: Output, prometheus: str) -> None:
        self.proc, self.out, self.prometheus = proc, out, prometheus


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    directory = tmp_path_factory.mktemp("observability") / "up"
    proc, out = start_up(
        "--dir", str(directory), "--prometheus", "on", "--prometheus-interval", INTERVAL
    )
    try:
        ready = out.wait_for(READY, proc, timeout=900)
        yield Up(proc, out, ready.group(4))
    finally:
        children = descendants(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        code = proc.wait(120)
        print(out.text())  # what `up` said, shown with any failure
    assert code == 0, out.text()
    assert not [pid for pid in children if alive(pid)], "processes left after Ctrl-C"


def test_every_dashboard_panel_returns_series(pipeline: Up) -> None:
    files = sorted(DASHBOARDS.glob("*.json"))
    assert {f.name for f in files} >= {"pipeline.json", "feed.json", "stream.json", "serve.json"}
    wanted = [
        (f.name, title, expr)
        for f in files
        if f.name not in PROVEN_ON_A_CLUSTER
        for title, expr in panel_queries(f)
    ]
    missing = list(wanted)
    started = time.monotonic()

    def all_answer() -> bool:
        nonlocal missing
        missing = [(f, t, e) for f, t, e in missing if not query(pipeline.prometheus, e)]
        return not missing

    deadline = time.monotonic() + 300
    while not all_answer():
        if time.monotonic() > deadline:
            pytest.fail(
                "panels without series:\n" + "\n".join(f"{f} {t}: {e}" for f, t, e in missing)
            )
        time.sleep(1.0)
    print(
        f"{len(wanted)} panel queries all returned series {time.monotonic() - started:.0f}s after READY"
    )
    # `up` runs no operator: its dashboard's series are checked by the cluster test named in
    # PROVEN_ON_A_CLUSTER; here its queries must at least be ones Prometheus accepts (query
    # raises otherwise).
    for name in PROVEN_ON_A_CLUSTER:
        for _, expr in panel_queries(DASHBOARDS / name):
            query(pipeline.prometheus, expr)


def shard_pid(root: int, shard: int) -> int:
    for pid in descendants(root):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"feed" in argv
            and b"--shard" in argv
            and argv[argv.index(b"--shard") + 1] == str(shard).encode()
        ):
            return pid
    pytest.fail(f"no feed shard {shard} below quantcore up")


def shard_alert(url: str, shard: str) -> dict[str, Any] | None:
    return next(
        (
            a
            for a in alerts(url)
            if a["labels"].get("alertname") == "QuantCoreFeedShardNotLive"
            and a["labels"].get("shard") == shard
        ),
        None,
    )


def test_killed_shard_is_alerted_within_the_rules_window(pipeline: Up) -> None:
    url = pipeline.prometheus
    window = seconds(rule("QuantCoreFeedShardNotLive")["for"])
    eventually(
        lambda: all(t["health"] == "up" for t in targets(url) if t["labels"]["job"] == "feed"),
        "every feed shard scraped",
        120,
    )
    assert shard_alert(url, "0") is None, "shard 0 alerted before the kill"

    os.kill(shard_pid(pipeline.proc.pid, 0), signal.SIGKILL)
    killed = time.monotonic()
    alert = eventually(
        lambda: shard_alert(url, "0"), "QuantCoreFeedShardNotLive for shard 0", window
    )
    noticed = time.monotonic() - killed
    assert alert["state"] in ("pending", "firing")
    print(
        f"shard 0 killed: QuantCoreFeedShardNotLive {alert['state']} after {noticed:.1f}s (window {window:.0f}s)"
    )
    assert noticed <= window
    # The other shard is not affected.
    assert shard_alert(url, "1") is None

    # Local mode starts the shard again (as a Deployment would its pod): the alert clears.
    eventually(
        lambda: shard_alert(url, "0") is None or None, "the alert clearing after the restart", 180
    )
    assert "feed-0 restarted" in pipeline.out.text()
    print(f"alert cleared {time.monotonic() - killed:.1f}s after the kill")
