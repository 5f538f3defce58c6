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
from pathlib import Path

import grpc
import pytest

from quantcore.client.stream import flatten
from quantcore.v1 import marketdata_pb2, marketdata_pb2_grpc, signals_pb2
from tests.signalcheck import assert_served_flow_matches, assert_served_values_match

pytestmark = pytest.mark.e2e

SYMBOLS = ("BTCUSDT", "ETHUSDT")
READY = re.compile(r"READY .* grpc (\S+), kafka (\S+), redis (\S+)")


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


async def collect(
    target: str, per_symbol: int, flows_per_symbol: int
) -> list[signals_pb2.SignalUpdate]:
    got: list[signals_pb2.SignalUpdate] = []
    counts = dict.fromkeys(SYMBOLS, 0)
    flow_counts = dict.fromkeys(SYMBOLS, 0)
    async with grpc.aio.insecure_channel(target) as channel:
        call = marketdata_pb2_grpc.MarketDataStub(channel).Subscribe(
            marketdata_pb2.SubscribeRequest(symbols=list(SYMBOLS))
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


def test_up_replay_serves_reference_values_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    # A second `up` on its own previous directory starts cleanly, from an emptied directory.
    stale = previous_run(tmp_path / "up")
    proc, out = start_up("--dir", str(tmp_path / "up"), "--symbols", *SYMBOLS)
    try:
        ready = out.wait_for(READY, proc, timeout=900)
        target, bootstrap = ready.group(1).rstrip(","), ready.group(2).rstrip(",")
        assert "source: REPLAY" in out.text()
        assert "previous run" not in stale.read_text()

        # Trade flow shows once a symbol's windows are covered: 30 s after its streams start.
        updates = asyncio.run(collect(target, per_symbol=40, flows_per_symbol=20))
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

        assert_served_values_match(books, bootstrap)
        assert_served_flow_matches(flows, bootstrap)
        for u in books:
            assert u.hops.feed_receive_ns > 0
            assert u.hops.server_receive_ns >= u.hops.sink_write_ns > 0

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
