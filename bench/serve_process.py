"""`quantcore serve` as a child process of a benchmark, so its CPU and RSS are its own."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def start_server(redis_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start `quantcore serve` on 127.0.0.1:`port` and return once it logs that it listens."""
    argv = [sys.executable, "-m", "quantcore.cli", "serve", "--redis", redis_url]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--max-streams", "100000"]
    with log.open("wb") as out:
        server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while "listening on" not in log.read_text():
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise SystemExit(f"quantcore serve did not start:\n{log.read_text()}")
        time.sleep(0.1)
    return server


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not drained and exited within 30 s."""
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
