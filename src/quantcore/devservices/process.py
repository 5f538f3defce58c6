"""One service process: started in its own session with output in a log file, stopped for sure.

Start failures raise `ServiceError` carrying the log's tail, so a broken service explains
itself in the test output instead of timing out silently.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class ServiceError(RuntimeError):
    """A service failed to start or to answer; the message includes its log tail."""


def log_tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"(log {path} is empty)"


class ServiceProcess:
    """A child process whose stdout and stderr go to `log`."""

    def __init__(self, name: str, command: Sequence[str], log: Path, cwd: Path) -> None:
        self.name = name
        self.command = list(command)
        self.log = log
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise ServiceError(f"{self.name} was not started")
        return self._popen.pid

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            # A new session: Ctrl-C in a terminal reaches us, not the service, so `stop`
            # stays in charge of shutting it down cleanly.
            self._popen = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def exit_code(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def wait_ready(self, probe: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `probe` until it returns True; fail early if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.exit_code()
            if code is not None:
                raise self.failure(f"exited with code {code} before {what}")
            if probe():
                return
            time.sleep(0.25)
        raise self.failure(f"did not get {what} within {timeout:.0f}s")

    def failure(self, reason: str) -> ServiceError:
        """An error naming the service, the reason and the last lines of its log."""
        return ServiceError(
            f"{self.name} {reason}.\ncommand: {' '.join(self.command)}\n"
            f"log {self.log} (tail):\n{log_tail(self.log)}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds; safe to call twice."""
        if self._popen is None or self._popen.poll() is not None:
            return
        self._popen.terminate()
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()


def stop_pid(pid: int, timeout: float = 15.0) -> bool:
    """Stop a process we started in an earlier command (by pid file); True if it was running."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our child; otherwise just probe.
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); /proc tells the truth.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
