"""Commands that own a directory or write a file a user names never delete or overwrite what
quantcore did not create: a user's directory or file is refused, untouched, with a message
naming it and the option that chooses another."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from quantcore.ownership import MARKER

pytestmark = pytest.mark.integration

USERS_FILE = "thesis.tex"


def quantcore(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quantcore.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def users_directory(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / USERS_FILE).write_text("years of work")
    return path


def assert_untouched(directory: Path) -> None:
    assert sorted(p.name for p in directory.iterdir()) == [USERS_FILE]
    assert (directory / USERS_FILE).read_text() == "years of work"


def up_without_recordings(directory: Path) -> subprocess.CompletedProcess[str]:
    # Fails fast after taking its directory: there is nothing to replay.
    return quantcore(
        "up", "--source", "replay", "--recordings", "/nonexistent", "--no-view",
        "--dir", str(directory),
    )  # fmt: skip


def test_up_refuses_a_users_directory(tmp_path: Path) -> None:
    directory = users_directory(tmp_path / "mine")
    done = up_without_recordings(directory)
    assert done.returncode == 1
    assert f"refusing to use {directory}" in done.stderr
    assert "--dir" in done.stderr
    assert "no recordings" not in done.stderr  # refused before doing anything else
    assert_untouched(directory)


def test_up_takes_its_own_directory_again(tmp_path: Path) -> None:
    directory = tmp_path / "up"
    first = up_without_recordings(directory)
    assert "no recordings" in first.stderr, first.stderr
    (directory / "logs").mkdir()
    (directory / "logs" / "stale.log").write_text("the previous run")
    second = up_without_recordings(directory)
    assert "refusing" not in second.stderr
    assert "no recordings" in second.stderr, second.stderr
    assert sorted(p.name for p in directory.iterdir()) == [MARKER]


def test_services_refuse_a_users_directory_and_down_leaves_it_alone(tmp_path: Path) -> None:
    directory = users_directory(tmp_path / "mine")
    done = quantcore("services", "up", "--dir", str(directory))
    assert done.returncode == 2
    assert f"refusing to use {directory}" in done.stderr
    assert "--dir" in done.stderr
    assert "SERVICES_DIR" in done.stderr
    assert_untouched(directory)

    # Files named like ours in a directory that is not ours are still not ours.
    (directory / "services.env").write_text("KEEP=1\n")
    (directory / "kafka.pid").write_text("999999\n/nonexistent/server.properties\n")
    down = quantcore("services", "down", "--dir", str(directory))
    assert down.returncode == 0
    assert (directory / "services.env").read_text() == "KEEP=1\n"
    assert (directory / "kafka.pid").exists()


def test_record_refuses_an_existing_recording(tmp_path: Path) -> None:
    out = tmp_path / "btcusdt_20240808.gz"
    out.write_bytes(b"a recording of a market that will never trade that way again")
    done = quantcore(
        "record", "--out", str(out), "--ws-url", "ws://127.0.0.1:9/stream",
        "--rest-url", "http://127.0.0.1:9", "--duration", "1", "BTCUSDT",
    )  # fmt: skip
    assert done.returncode == 2
    assert f"refusing to use {out}" in done.stderr
    assert "--force" in done.stderr
    assert "--out" in done.stderr
    assert out.read_bytes() == b"a recording of a market that will never trade that way again"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_replay_refuses_an_existing_url_file(tmp_path: Path) -> None:
    url_file = tmp_path / "urls.json"
    url_file.write_text("mine")
    done = quantcore("replay", "--url-file", str(url_file), str(tmp_path / "none.gz"))
    assert done.returncode == 2
    assert "--url-file" in done.stderr
    assert url_file.read_text() == "mine"
