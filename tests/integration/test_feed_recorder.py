"""`quantcore record` against the replay server writes a recording that syncs cleanly, and
one that is complete however it ends (SIGTERM, a dropped connection)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quantcore.devservices.programs import ReplayProcess
from quantcore.feed.recording import publish_recording, read_recording
from tests.unit.feed.reference import BTC, ETH

pytestmark = pytest.mark.integration


def test_record_from_the_replay_then_sync_the_recording(tmp_path: Path) -> None:
    out = tmp_path / "recorded.gz"
    with ReplayProcess([BTC, ETH], tmp_path, speed=5) as replay:
        done = subprocess.run(
            [
                sys.executable, "-m", "quantcore.cli", "record", "--out", str(out),
                "--ws-url", replay.ws_url, "--rest-url", replay.rest_url,
                "--duration", "12", "BTCUSDT", "ETHUSDT",
            ],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = list(read_recording(out))
    snapshots = [line for line in lines if line.is_snapshot]
    assert sorted(line.symbol or "" for line in snapshots) == ["BTCUSDT", "ETHUSDT"]
    assert {line.symbol for line in lines} == {"BTCUSDT", "ETHUSDT"}
    published = publish_recording(out)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        counters = published.counters[symbol]
        assert counters.applied > 10, symbol
        assert counters.gaps == 0
        assert counters.crossed == 0
    assert published.quarantined == {}


def partial_of(out: Path, recorder: subprocess.Popen[str]) -> Path:
    """The file `quantcore record` writes until it ends (see quantcore.ownership.FileBeside)."""
    return out.with_name(f".{out.name}.{recorder.pid}.partial")


def start_recording(out: Path, replay: ReplayProcess, *extra: str) -> subprocess.Popen[str]:
    recorder = subprocess.Popen(
        [
            sys.executable, "-m", "quantcore.cli", "record", "--out", str(out), *extra,
            "--ws-url", replay.ws_url, "--rest-url", replay.rest_url, "BTCUSDT", "ETHUSDT",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # Compressed frames reach the disk in blocks: past the 10-byte gzip header, it records.
    partial = partial_of(out, recorder)
    deadline = time.monotonic() + 120
    while not (partial.exists() and partial.stat().st_size > 4096):
        if recorder.poll() is not None or time.monotonic() > deadline:
            recorder.kill()
            pytest.fail(f"the recorder never wrote: {recorder.communicate()}")
        time.sleep(0.1)
    return recorder


def assert_complete(out: Path, stdout: str) -> None:
    """Every line the recorder reports is read back, to the end of a complete gzip stream
    (a truncated one raises EOFError)."""
    written = int(re.search(r"wrote (\d+) lines", stdout).group(1))  # type: ignore[union-attr]
    lines = list(read_recording(out))
    assert len(lines) == written > 0
    assert {line.symbol for line in lines} == {"BTCUSDT", "ETHUSDT"}
    assert not list(out.parent.glob(f".{out.name}.*.partial"))


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_keeps_a_complete_recording_in_place_of_the_forced_one(
    tmp_path: Path, stop: signal.Signals
) -> None:
    out = tmp_path / "recorded.gz"
    out.write_bytes(b"an old recording, replaced on purpose")
    with ReplayProcess([BTC, ETH], tmp_path, speed=5) as replay:
        recorder = start_recording(out, replay, "--force")
        assert out.read_bytes() == b"an old recording, replaced on purpose"  # until complete
        recorder.send_signal(stop)
        stdout, stderr = recorder.communicate(timeout=60)
    assert recorder.returncode == 0, stderr
    assert_complete(out, stdout)


def test_a_dropped_connection_keeps_a_complete_recording(tmp_path: Path) -> None:
    out = tmp_path / "recorded.gz"
    with ReplayProcess([BTC, ETH], tmp_path, speed=5) as replay:
        recorder = start_recording(out, replay)
        os.kill(replay.pid, signal.SIGKILL)  # the exchange vanishes: no close frame
        stdout, stderr = recorder.communicate(timeout=120)
    assert recorder.returncode == 1
    assert "connection lost" in stderr
    assert_complete(out, stdout)
