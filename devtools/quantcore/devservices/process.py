"""One service process: started in its own session with output in a log file, stopped for sure;
and `ManagedService`, the start/stop/`with` lifecycle Kafka and Redis share on top of it.

Start failures raise `ServiceError` carrying the log's tail, so a broken service explains
itself in the test output instead of timing out silently.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType


class ServiceError(RuntimeError):
    """A service failed to start or to answer; the message includes its log tail."""


def without_stack_frames(text: str) -> list[str]:
    """Lines of `text` minus Java stack frames, which would push the error out of a tail."""
    return [
        line
        for line in text.splitlines()
        if not line.lstrip().startswith("at ") and not line.lstrip().startswith("... ")
    ]


def log_tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file (stack frames dropped), or a note there is none."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(without_stack_frames(text)[-lines:]) or f"(log {path} is empty)"


_ERROR_MARKS = (" ERROR ", " FATAL ", "Exception", "Caused by", "# ")


def first_errors(path: Path, limit: int = 8) -> list[str]:
    """The first error lines of a log: the cause, before shutdown noise buries it.

    Kafka logs `ERROR`/`FATAL` and exceptions; redis-server marks fatal config errors `# `.
    """
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    hits = [line for line in without_stack_frames(text) if any(m in line for m in _ERROR_MARKS)]
    return hits[:limit]


class ServiceProcess:
    """A child process whose stdout and stderr go to `log`."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        log: Path,
        cwd: Path,
        *,
        die_with_parent: bool = False,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.log = log
        self.cwd = cwd
        self.die_with_parent = die_with_parent
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
                preexec_fn=terminate_with_parent if self.die_with_parent else None,
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
        """An error naming the service, the reason, the log's first errors and its tail."""
        errors = first_errors(self.log)
        first = "first errors in log:\n" + "\n".join(errors) + "\n" if errors else ""
        return ServiceError(
            f"{self.name} {reason}.\ncommand: {' '.join(self.command)}\n"
            f"{first}log {self.log} (tail):\n{log_tail(self.log, 25)}"
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


class ManagedService:
    """What every dev service shares: a `workdir`, one `ServiceProcess`, a start that waits
    for readiness (stopping the process if it never gets there), stop, and `with` support.

    Subclasses implement `start()` (prepare config, then `_launch`) returning the address."""

    # Seconds `stop` gives the process after SIGTERM before SIGKILL.
    stop_timeout = 15.0

    def __init__(
        self, workdir: Path, log_name: str, *, die_with_parent: bool, start_timeout: float
    ) -> None:
        self.workdir = Path(workdir)
        self.start_timeout = start_timeout
        # True for test fixtures: the service ends with the process that started it.
        self.die_with_parent = die_with_parent
        self.log = self.workdir / log_name
        self.process: ServiceProcess | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServiceError("not started")
        return self.process.pid

    def start(self) -> str:
        raise NotImplementedError

    def _launch(
        self, name: str, command: Sequence[str], probe: Callable[[], bool], what: str
    ) -> None:
        """Start `command` and wait until `probe` holds; on failure stop it and re-raise."""
        self.process = ServiceProcess(
            name, command, self.log, self.workdir, die_with_parent=self.die_with_parent
        )
        self.process.start()
        try:
            self.process.wait_ready(probe, self.start_timeout, what)
        except ServiceError:
            self.process.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=self.stop_timeout)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def terminate_with_parent() -> None:
    """In the child before exec: ask Linux for SIGTERM when the parent dies, so a test run
    that is killed outright (no fixture teardown) leaves no broker behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def command_line(pid: int) -> str:
    """The command line of a running process, or "" when there is none."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def stop_pid(pid: int, marker: str, timeout: float = 15.0) -> bool:
    """Stop a process started by an earlier command (from its pid file).

    Only if its command line contains `marker` (its config path): a pid file outliving a
    reboot must never get an unrelated process killed. True if it was running.
    """
    if marker not in command_line(pid):
        return False
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
