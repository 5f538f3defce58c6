"""The feed's local processes: a replay server and feed shards run as `quantcore` subcommands.

Used by local mode, the integration tests and the benchmark. Each handle stops its process on
exit (SIGTERM, then SIGKILL) and shows the process's output tail when it fails to start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quantcore.events import BOOK_TOPIC, QUARANTINE_TOPIC, RAW_TOPIC, TRADES_TOPIC


class ProcessError(RuntimeError):
    pass


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Process:
    def __init__(self, args: Sequence[str], log_path: Path) -> None:
        self.args = [sys.executable, "-m", "quantcore.cli", *args]
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def fail(self, what: str) -> ProcessError:
        return ProcessError(f"{what}: {' '.join(self.args)}\n--- log tail ---\n{self.tail()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ReplayProcess(_Process):
    """`quantcore replay` on a free port; `ws_url`/`rest_url` once started."""

    def __init__(
        self, files: Sequence[Path], workdir: Path, *, speed: float = 1.0, loop: bool = False
    ) -> None:
        self.url_file = workdir / f"replay-{os.getpid()}-{time.monotonic_ns()}.json"
        args = ["replay", "--port", "0", "--speed", str(speed), "--url-file", str(self.url_file)]
        if loop:
            args.append("--loop")
        super().__init__([*args, *map(str, files)], workdir / "replay.log")
        self.ws_url = ""
        self.rest_url = ""

    def __enter__(self) -> ReplayProcess:
        self.start()
        deadline = time.monotonic() + 120
        while not self.url_file.exists():
            if not self.alive():
                raise self.fail("replay exited")
            if time.monotonic() > deadline:
                self.stop()
                raise self.fail("replay did not publish its URL")
            time.sleep(0.1)
        time.sleep(0.05)
        urls = json.loads(self.url_file.read_text())
        self.ws_url, self.rest_url = urls["ws_url"], urls["rest_url"]
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def status(self) -> dict[str, Any]:
        return _get_json(f"{self.rest_url}/_replay/status")

    def fault(self, kind: str, **params: object) -> None:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        req = urllib.request.Request(
            f"{self.rest_url}/_replay/fault/{kind}?{query}", method="POST", data=b""
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()


class ShardProcess(_Process):
    """`quantcore feed` with a metrics port; `health()` reads its /healthz."""

    def __init__(
        self,
        *,
        routing: Path,
        shard: int,
        kafka: str,
        ws_url: str,
        rest_url: str,
        workdir: Path,
        topic_prefix: str | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        self.metrics_port = free_port()
        args = [
            "feed",
            "--routing", str(routing),
            "--shard", str(shard),
            "--kafka", kafka,
            "--ws-url", ws_url,
            "--rest-url", rest_url,
            "--metrics-port", str(self.metrics_port),
        ]  # fmt: skip
        if topic_prefix:
            args += ["--topic-prefix", topic_prefix]
        super().__init__([*args, *extra], workdir / f"feed-{shard}.log")

    def __enter__(self) -> ShardProcess:
        self.start()
        deadline = time.monotonic() + 120
        while True:
            if not self.alive():
                raise self.fail("feed shard exited")
            try:
                self.health()
                return self
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise self.fail("feed shard health endpoint never answered") from None
                time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def health(self) -> dict[str, Any]:
        try:
            return _get_json(f"http://127.0.0.1:{self.metrics_port}/healthz")
        except urllib.error.HTTPError as exc:
            if exc.code == 503:
                return dict(json.loads(exc.read()))
            raise

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10
        ) as resp:
            return str(resp.read().decode())


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def topic_names(prefix: str | None) -> dict[str, str]:
    if not prefix:
        return {
            "raw": RAW_TOPIC,
            "book": BOOK_TOPIC,
            "trades": TRADES_TOPIC,
            "quarantine": QUARANTINE_TOPIC,
        }
    return {kind: f"{prefix}.{kind}" for kind in ("raw", "book", "trades", "quarantine")}


def create_topics(bootstrap: str, prefix: str | None, partitions: int) -> dict[str, str]:
    """Create the four feed topics (the operator does this on a cluster)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    names = topic_names(prefix)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in names.values()])
    for future in futures.values():
        future.result(timeout=60)
    return names
