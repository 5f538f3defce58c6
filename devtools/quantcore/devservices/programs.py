"""QuantCore's own programs as local child processes: the replay server, feed shards and the
gRPC server, each a `quantcore` subcommand run by this interpreter.

Used by local mode, the integration tests and the benchmarks. Each is a `ChildProcess`: `with`
starts it and waits until it serves (`wait_started`), and stops it on exit; a failure carries
its log's tail.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from quantcore import kafkaauth, redisauth
from quantcore.devservices.ports import LOOPBACK, free_port
from quantcore.devservices.process import ChildProcess
from quantcore.events import Topics
from quantcore.feedshard import shard_args
from quantcore.kafkaauth import KafkaAuth
from quantcore.redisauth import RedisAuth

START_TIMEOUT_S = 120.0


def quantcore_argv(*args: str) -> list[str]:
    """argv for a `quantcore` subcommand run by this interpreter."""
    return [sys.executable, "-m", "quantcore.cli", *args]


_CREDENTIALS_ENV = (
    redisauth.USERNAME_ENV,
    redisauth.PASSWORD_ENV,
    redisauth.CA_FILE_ENV,
    kafkaauth.PROTOCOL_ENV,
    kafkaauth.MECHANISM_ENV,
    kafkaauth.USERNAME_ENV,
    kafkaauth.PASSWORD_ENV,
    kafkaauth.CA_FILE_ENV,
)


def child_env(
    auth: RedisAuth | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    kafka: KafkaAuth | None = None,
) -> dict[str, str]:
    """This process's environment for a child, with `auth`'s Redis credentials, `kafka`'s
    Kafka credentials and no others: each process gets its own users' passwords alone (none:
    no Redis, PLAINTEXT Kafka)."""
    base = os.environ if environ is None else environ
    env = {key: value for key, value in base.items() if key not in _CREDENTIALS_ENV}
    if auth is not None:
        env.update(auth.env())
    if kafka is not None:
        env.update(kafka.env())
    return env


class ReplayProcess(ChildProcess):
    """`quantcore replay` on a free port; `ws_url`/`rest_url` once it serves."""

    def __init__(
        self,
        files: Sequence[Path],
        workdir: Path,
        *,
        speed: float = 1.0,
        loop: bool = False,
        symbols: int | None = None,
        log: Path | None = None,
        die_with_parent: bool = False,
        metrics_port: int | None = None,
        start: str | None = None,
    ) -> None:
        self.url_file = workdir / f"replay-{os.getpid()}-{time.monotonic_ns()}.json"
        args = ["replay", "--port", "0", "--speed", str(speed), "--url-file", str(self.url_file)]
        if loop:
            # Play the recordings again and again (ids keep growing) until stopped.
            args.append("--loop")
        if symbols is not None:
            # That many symbols, copies of the recordings under other names.
            args += ["--symbols", str(symbols)]
        if metrics_port is not None:
            args += ["--metrics-port", str(metrics_port)]
        if start is not None:
            # Serve from then; what the files hold before it only builds the true book.
            args += ["--from", start]
        super().__init__(
            "replay",
            quantcore_argv(*args, *map(str, files)),
            log or workdir / "replay.log",
            die_with_parent=die_with_parent,
        )
        self.ws_url = ""
        self.rest_url = ""

    def wait_started(self, timeout: float = START_TIMEOUT_S) -> None:
        """Wait for the URLs the server publishes once it listens."""
        self.wait_ready(
            lambda: self.url_file.exists() and self.url_file.stat().st_size > 0,
            timeout,
            "its URLs published",
        )
        urls = json.loads(self.url_file.read_text())
        self.ws_url, self.rest_url = urls["ws_url"], urls["rest_url"]

    def status(self) -> dict[str, Any]:
        return _get_json(f"{self.rest_url}/_replay/status")

    def set_quote_volumes(self, volumes: dict[str, float]) -> None:
        """The 24 h ticker's quote volumes from now on (POST /_replay/ticker)."""
        req = urllib.request.Request(
            f"{self.rest_url}/_replay/ticker", method="POST", data=json.dumps(volumes).encode()
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    def fault(self, kind: str, **params: object) -> None:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        req = urllib.request.Request(
            f"{self.rest_url}/_replay/fault/{kind}?{query}", method="POST", data=b""
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()


class ShardProcess(ChildProcess):
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
        kafka_auth: KafkaAuth | None = None,
    ) -> None:
        self.metrics_port = free_port()
        args = shard_args(
            routing=str(routing),
            shard=shard,
            kafka=kafka,
            ws_url=ws_url,
            rest_url=rest_url,
            metrics_port=self.metrics_port,
            topic_prefix=topic_prefix,
        )
        super().__init__(
            f"feed-{shard}",
            quantcore_argv(*args, *extra),
            workdir / f"feed-{shard}.log",
            # The feed user alone (quantcore.kafkaacl.FEED), no Redis.
            env=child_env(kafka=kafka_auth),
        )

    def wait_started(self, timeout: float = START_TIMEOUT_S) -> None:
        self.wait_ready(self._answers, timeout, "its health endpoint answering")

    def _answers(self) -> bool:
        try:
            self.health()
        except (OSError, urllib.error.URLError):
            return False
        return True

    def health(self) -> dict[str, Any]:
        try:
            return _get_json(f"http://{LOOPBACK}:{self.metrics_port}/healthz")
        except urllib.error.HTTPError as exc:
            if exc.code == 503:
                return dict(json.loads(exc.read()))
            raise

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://{LOOPBACK}:{self.metrics_port}/metrics", timeout=10
        ) as resp:
            return str(resp.read().decode())


class ServeProcess(ChildProcess):
    """`quantcore serve` on 127.0.0.1:`port`, ready once it logs that it listens.

    Plaintext (`--insecure`, said explicitly) unless `extra` names TLS files."""

    def __init__(
        self,
        redis_url: str,
        port: int,
        log: Path,
        *extra: str,
        redis_auth: RedisAuth | None = None,
        die_with_parent: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`env`: more environment (an S3 endpoint and its keys, for a lake on S3)."""
        self.port = port
        self.target = f"{LOOPBACK}:{port}"
        if not any(arg in ("--tls-dir", "--tls-cert", "--insecure") for arg in extra):
            extra = (*extra, "--insecure")
        args = ["serve", "--redis", redis_url, "--host", LOOPBACK, "--port", str(port), *extra]
        super().__init__(
            "serve",
            quantcore_argv(*args),
            log,
            env={**child_env(redis_auth or RedisAuth()), **(env or {})},
            die_with_parent=die_with_parent,
        )

    def wait_started(self, timeout: float = 60.0) -> None:
        self.wait_ready(
            lambda: self.log.exists() and "listening on" in self.log.read_text(errors="replace"),
            timeout,
            "listening",
        )


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def create_topics(
    bootstrap: str, prefix: str | None, partitions: int, auth: KafkaAuth | None = None
) -> dict[str, str]:
    """Create the five feed topics (the operator does this on a cluster) as `auth`'s user
    (operator or admin); kind -> topic."""
    from confluent_kafka.admin import AdminClient, NewTopic

    topics = Topics.with_prefix(prefix)
    admin = AdminClient({**(auth or KafkaAuth()).client_config(), "bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in topics.by_kind().values()])
    for future in futures.values():
        future.result(timeout=60)
    return topics.by_kind()
