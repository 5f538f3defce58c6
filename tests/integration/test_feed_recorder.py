"""`quantcore record` against the replay server writes a recording that syncs cleanly."""

from __future__ import annotations

import subprocess
import sys
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
