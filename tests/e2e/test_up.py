"""`quantcore up --source replay` end to end: Kafka, Redis, replay, feed shards, the Spark job
and the gRPC server as real processes. A gRPC client subscribes to both recorded symbols and
every book value it receives must equal a reference computed here, independently, from the
book record with the same sequence on the Kafka `book` topic, and every trade-flow value the
one from its `flow` record. Ctrl-C then stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import grpc
import pytest

from quantcore import lake
from quantcore.client.history import HistoryQuery, history_rows
from quantcore.client.security import ClientCredentials
from quantcore.client.stream import flatten
from quantcore.devservices.kafka import stored_auth
from quantcore.v1 import marketdata_pb2, marketdata_pb2_grpc, signals_pb2
from tests.fixtures.cluster import eventually
from tests.signalcheck import assert_served_flow_matches, assert_served_values_match

pytestmark = pytest.mark.e2e

SYMBOLS = ("BTCUSDT", "ETHUSDT")
READY = re.compile(r"READY .* grpc (\S+), kafka (\S+), redis (\S+)")
# Secure by default: the READY line says how to attach (CA and token file under --dir).
ATTACH = re.compile(r"--ca (\S+) --token-file (\S+)\)")


def descendants(root: int) -> set[int]:
    """Every live process below `root` (children of children included)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Output:
    """Collects a child's output lines on a thread, so reading never blocks the test."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: re.Pattern[str], proc: subprocess.Popen[str], timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if m := pattern.search(line):
                    return m
            if proc.poll() is not None:
                time.sleep(0.5)
                pytest.fail(f"quantcore up exited with {proc.returncode}:\n{self.text()}")
            time.sleep(0.5)
        pytest.fail(f"quantcore up not ready after {timeout:.0f}s:\n{self.text()}")


async def refusals(target: str, creds: ClientCredentials) -> list[grpc.StatusCode]:
    """What a plaintext client and a TLS client without the token get from the server."""
    codes = []
    for channel in (
        grpc.aio.insecure_channel(target),
        ClientCredentials(ca=creds.ca).channel(target),
    ):
        async with channel:
            try:
                await marketdata_pb2_grpc.MarketDataStub(channel).ListSymbols(
                    marketdata_pb2.ListSymbolsRequest(), timeout=10
                )
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code())
    return codes


async def collect(
    target: str, per_symbol: int, flows_per_symbol: int, creds: ClientCredentials
) -> list[signals_pb2.SignalUpdate]:
    got: list[signals_pb2.SignalUpdate] = []
    counts = dict.fromkeys(SYMBOLS, 0)
    flow_counts = dict.fromkeys(SYMBOLS, 0)
    async with creds.channel(target) as channel:
        call = marketdata_pb2_grpc.MarketDataStub(channel).Subscribe(
            marketdata_pb2.SubscribeRequest(symbols=list(SYMBOLS)), metadata=creds.metadata()
        )
        async with asyncio.timeout(300):
            async for update in flatten(call):
                got.append(update)
                if update.WhichOneof("body") == "book":
                    counts[update.symbol] += 1
                else:
                    flow_counts[update.symbol] += 1
                if all(c >= per_symbol for c in counts.values()) and all(
                    c >= flows_per_symbol for c in flow_counts.values()
                ):
                    break
        call.cancel()
    return got


def start_up(*args: str) -> tuple[subprocess.Popen[str], Output]:
    """`quantcore up --source replay --no-view --port 0 <args>` and a reader of its output."""
    argv = [sys.executable, "-m", "quantcore.cli", "up", "--source", "replay", "--no-view"]
    proc = subprocess.Popen(
        [*argv, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return proc, Output(proc)


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def credentials_by_command(
    root: int, passwords: Iterable[str], username_env: str, password_env: str
) -> dict[str, set[tuple[str | None, str | None]]]:
    """The (user, password) pairs that the stream, serve and feed processes under `root` hold
    in their environment, per command; fails if any password is on any command line."""
    secrets = list(passwords)
    held: dict[str, set[tuple[str | None, str | None]]] = {
        "stream": set(),
        "serve": set(),
        "feed": set(),
    }
    for pid in descendants(root):
        argv = _cmdline(pid)
        for password in secrets:
            assert not any(password in arg for arg in argv), f"a password on {argv[:4]}"
        if argv[1:3] == ["-m", "quantcore.cli"] and argv[3:4] and argv[3] in held:
            env = _environ(pid)
            held[argv[3]].add((env.get(username_env), env.get(password_env)))
    return held


def assert_redis_is_secured(state: Path, address: str, output: str, root: int) -> None:
    """TLS and ACL users, passwords never printed or on a command line, and each process
    holding its own user's credentials alone (the feed shards none)."""
    import redis

    from quantcore.redisauth import PASSWORD_ENV, USERNAME_ENV

    assert address.startswith("rediss://127.0.0.1:"), address
    passwords = {
        u: (state / "redis" / "passwords" / u).read_text().strip() for u in ("relay", "serve")
    }
    assert not (state / "redis" / "passwords" / "admin").exists()  # no admin in the pipeline
    for password in passwords.values():
        assert password not in output
        assert password not in (state / "redis" / "users.acl").read_text()  # hashes only
    ca = str(state / "redis" / "tls" / "ca.crt")
    anonymous = redis.Redis.from_url(address, ssl_ca_certs=ca, protocol=2, socket_timeout=10)
    with pytest.raises(redis.AuthenticationError):
        anonymous.get("qc:symbols")
    anonymous.close()
    held = credentials_by_command(root, passwords.values(), USERNAME_ENV, PASSWORD_ENV)
    assert held == {
        "stream": {("relay", passwords["relay"])},
        "serve": {("serve", passwords["serve"])},
        "feed": {(None, None)},
    }, held


def assert_kafka_is_secured(state: Path, bootstrap: str, output: str, root: int) -> None:
    """SASL_SSL with a SCRAM user per process: passwords never printed or on a command line,
    the feed shards holding the feed user's credentials alone, the stream job the stream
    user's, the server none; a client without credentials gets nothing."""
    from confluent_kafka import KafkaError, Producer

    from quantcore import kafkaauth

    security = state / "kafka" / "security"
    passwords = {
        u: (security / "passwords" / u).read_text().strip() for u in ("feed", "stream", "operator")
    }
    for password in passwords.values():
        assert password not in output
    held = credentials_by_command(
        root, passwords.values(), kafkaauth.USERNAME_ENV, kafkaauth.PASSWORD_ENV
    )
    assert held == {
        "stream": {("stream", passwords["stream"])},
        "serve": {(None, None)},
        "feed": {("feed", passwords["feed"])},
    }, held
    # A producer without credentials delivers nothing (a TLS client that never authenticates).
    errors: list[KafkaError | None] = []
    anonymous = Producer(
        {
            "bootstrap.servers": bootstrap,
            "security.protocol": "ssl",
            "ssl.ca.location": str(security / "tls" / "ca.crt"),
            "message.timeout.ms": 5000,
            "log_level": 0,
            "on_delivery": lambda err, msg: errors.append(err),
        }
    )
    anonymous.produce("quantcore.book", b"forged", b"BTCUSDT")
    anonymous.flush(15)
    assert len(errors) == 1, errors
    assert errors[0] is not None, "a producer without credentials delivered"


def previous_run(directory: Path) -> Path:
    """`directory` as an earlier `quantcore up` left it (that one found nothing to replay),
    with a stale log; returns the stale log."""
    earlier = subprocess.run(
        [sys.executable, "-m", "quantcore.cli", "up", "--source", "replay", "--no-view",
         "--recordings", "/nonexistent", "--dir", str(directory)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert "no recordings" in earlier.stderr, earlier.stderr
    stale = directory / "logs" / "serve.log"
    stale.parent.mkdir()
    stale.write_text("listening on a port of the previous run\n")
    return stale


def seed_lake(root: Path) -> tuple[Path, Path]:
    """An earlier run's lake sink with one committed file in a partition 30 days old, and a
    file of the user's beside it; returns both."""
    import json
    from datetime import UTC, datetime, timedelta

    import duckdb

    day = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()
    table = root / "run-earlier" / "signals"
    part = table / f"date={day}" / "symbol=BTCUSDT" / "part-0.parquet"
    part.parent.mkdir(parents=True)
    duckdb.sql(f"COPY (SELECT 1 AS sequence) TO '{part}' (FORMAT parquet)")
    written = (datetime.now(UTC) - timedelta(days=30)).timestamp()
    os.utime(part, (written, written))  # retention ages a file by its write time
    (table / "_spark_metadata").mkdir()
    entry = {"path": f"file:{part}", "size": 1, "isDir": False, "action": "add"}
    (table / "_spark_metadata" / "0").write_text("v1\n" + json.dumps(entry))
    mine = root / "notes.txt"
    mine.write_text("the user's")
    return part, mine


def lake_sequences(root: Path, symbol: str, days: list[str]) -> set[int]:
    """The book sequences `quantcore history` returns for `symbol` over `days`."""
    done = subprocess.run(
        [sys.executable, "-m", "quantcore.cli", "history", symbol, "--lake", str(root),
         "--from", min(days), "--to", max(days), "--format", "csv", "--fields", "sequence"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if done.returncode == 1:  # nothing committed yet
        return set()
    assert done.returncode == 0, done.stderr
    return {int(line) for line in done.stdout.split()[1:]}


def test_up_replay_serves_reference_values_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    # A second `up` on its own previous directory starts cleanly, from an emptied directory.
    stale = previous_run(tmp_path / "up")
    expired, mine = seed_lake(tmp_path / "up" / "lake")
    proc, out = start_up("--dir", str(tmp_path / "up"), "--symbols", *SYMBOLS)
    try:
        ready = out.wait_for(READY, proc, timeout=900)
        target, bootstrap = ready.group(1).rstrip(","), ready.group(2).rstrip(",")
        assert "source: REPLAY" in out.text()
        assert "previous run" not in stale.read_text()
        attach = ATTACH.search(out.text())  # the READY line's end
        assert attach, out.text()
        ca, token_file = Path(attach.group(1)), Path(attach.group(2))
        assert ca.parent == tmp_path / "up" / "tls"
        creds = ClientCredentials(ca=ca, token=token_file.read_text().strip())
        assert asyncio.run(refusals(target, creds)) == [
            grpc.StatusCode.UNAVAILABLE,  # plaintext against TLS: no handshake
            grpc.StatusCode.UNAUTHENTICATED,  # TLS without the token
        ]
        assert_redis_is_secured(tmp_path / "up", ready.group(3).rstrip(","), out.text(), proc.pid)
        assert_kafka_is_secured(tmp_path / "up", bootstrap, out.text(), proc.pid)
        kafka_admin = stored_auth(tmp_path / "up" / "kafka" / "security", "admin").client_config()

        # Trade flow shows once a symbol's windows are covered: 30 s after its streams start.
        updates = asyncio.run(collect(target, per_symbol=40, flows_per_symbol=20, creds=creds))
        books = [u for u in updates if u.WhichOneof("body") == "book"]
        flows = [u for u in updates if u.WhichOneof("body") == "trades"]
        assert {u.symbol for u in flows} == set(SYMBOLS)
        assert {u.symbol for u in books} == set(SYMBOLS)
        # Per (symbol, kind), sequences only grow.
        last: dict[tuple[str, str], int] = {}
        for u in updates:
            key = (u.symbol, u.WhichOneof("body") or "")
            assert u.sequence > last.get(key, -1), f"{key} went back to {u.sequence}"
            last[key] = u.sequence

        assert_served_values_match(books, bootstrap, kafka_admin)
        assert_served_flow_matches(flows, bootstrap, kafka_admin)
        for u in books:
            assert u.hops.feed_receive_ns > 0
            assert u.hops.server_receive_ns >= u.hops.sink_write_ns > 0

        # The lake: kept across runs, retention removed the earlier run's 30-day-old partition
        # and nothing of the user's; this run's served books reach it (`quantcore history`).
        assert not expired.exists()
        assert not expired.parent.exists()
        assert mine.read_text() == "the user's"
        days = sorted({lake.partition_date(u.event_time_ms) for u in books})

        def in_lake() -> bool:
            return all(
                {u.sequence for u in books if u.symbol == symbol}
                <= lake_sequences(tmp_path / "up" / "lake", symbol, days)
                for symbol in SYMBOLS
            )

        eventually(in_lake, "the served books in the lake", timeout=300)
        # The same rows through the API: `quantcore up` gives its server the lake (History).
        span = lake.interval(min(days), max(days))
        for symbol in SYMBOLS:
            query = HistoryQuery(symbol, span.start_ms, span.end_ms, fields=("sequence",))
            _, rows = asyncio.run(history_rows(target, query, creds))
            served = {u.sequence for u in books if u.symbol == symbol}
            assert served <= {row[0] for row in rows}

        children = descendants(proc.pid)
        assert children, "quantcore up has no child processes"
    finally:
        failing = sys.exc_info()[1]  # an assertion above must not be masked by the stop below
        started = descendants(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            code = proc.wait(120)
        except subprocess.TimeoutExpired:
            for pid in (proc.pid, *started):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if failing is None:
                pytest.fail(f"quantcore up did not stop within 120 s of Ctrl-C:\n{out.text()}")
        if failing is not None:
            print(out.text())  # shown with the failure: what `up` said before it
    assert code == 0, out.text()
    assert "none left running" in out.text()
    survivors = [pid for pid in children if alive(pid)]
    assert not survivors, f"processes left after Ctrl-C: {survivors}"
