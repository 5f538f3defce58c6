"""`ChildProcess`, the one handle on a process the project's tooling starts: in its own session,
output in a log file, stopped for sure; and `ManagedService`, the start/stop/`with` lifecycle
Kafka and Redis share on top of it.

Start failures raise errors carrying the log's first errors and tail, so a broken process
explains itself in the test output instead of timing out silently.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self


class ProcessError(RuntimeError):
    """A child process failed to start, to answer, or died; the message carries its log."""


class ServiceError(ProcessError):
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


class ChildProcess:
    """A child process in its own session (so its own process group) with its output in `log`.

    The one process handle of the project's tooling: dev services, the feed's replay server and
    shards, local mode's children, the test control plane and the tests all start theirs here.
    A new session keeps a terminal's Ctrl-C away from the child, so whoever started it decides
    the order of shutdown; `stop` signals the whole group, so grandchildren (Spark's JVM under
    the stream job) go too. `die_with_parent` asks the kernel for SIGTERM should the starter be
    killed outright (no teardown ran).
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        log: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.log = log
        self.cwd = cwd
        self.env = None if env is None else dict(env)
        self.die_with_parent = die_with_parent
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def started(self) -> bool:
        return self._popen is not None

    @property
    def pid(self) -> int:
        """The child's pid, which is also its process group's id (it leads its session)."""
        if self._popen is None:
            raise ProcessError(f"{self.name} was not started")
        return self._popen.pid

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self._popen = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=terminate_with_parent if self.die_with_parent else None,
            )

    def exit_code(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def check(self) -> None:
        """Raise `ProcessError` (with the log) if the child has exited."""
        code = self.exit_code()
        if code is not None:
            raise self.failure(f"exited with code {code}")

    def wait_ready(self, probe: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `probe` until it returns True; fail early if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.exit_code()
            if code is not None:
                raise self.failure(f"exited with code {code} before {what}")
            if probe():
                return
            time.sleep(0.1)
        raise self.failure(f"did not get {what} within {timeout:.0f}s")

    def tail(self, lines: int = 40) -> str:
        return log_tail(self.log, lines)

    def failure(self, reason: str) -> ProcessError:
        """An error naming the process, the reason, the log's first errors and its tail."""
        errors = first_errors(self.log)
        first = "first errors in log:\n" + "\n".join(errors) + "\n" if errors else ""
        return ProcessError(
            f"{self.name} {reason}.\ncommand: {' '.join(self.command)}\n"
            f"{first}log {self.log} (tail):\n{self.tail(25)}"
        )

    def signal_group(self, sig: int) -> None:
        if self._popen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._popen.pid, sig)

    def group_alive(self) -> bool:
        """True while any process of the child's group is left (the child or what it started)."""
        if self._popen is None:
            return False
        try:
            os.killpg(self._popen.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def wait_gone(self, timeout: float) -> bool:
        """Reap the child and wait until no process of its group is left."""
        if self._popen is None:
            return True
        deadline = time.monotonic() + timeout
        while True:
            self._popen.poll()
            if self._popen.returncode is not None and not self.group_alive():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM to the group, then SIGKILL after `timeout` seconds; safe to call twice.
        Returns the child's exit code (None if it never started)."""
        if self._popen is None:
            return None
        if self._popen.poll() is None or self.group_alive():
            self.signal_group(signal.SIGTERM)
            if not self.wait_gone(timeout):
                self.kill()
        return self._popen.returncode

    def kill(self) -> None:
        """SIGKILL to the group, and reap the child."""
        self.signal_group(signal.SIGKILL)
        self.wait_gone(5.0)

    def wait_started(self) -> None:
        """What `with` waits for after starting it: nothing here, a program's readiness in a
        subclass (raising `ProcessError` when it does not get there)."""

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_started()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ManagedService:
    """What every dev service shares: a `workdir`, one `ChildProcess`, a start that waits
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
        self.process: ChildProcess | None = None

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
        self.process = ChildProcess(
            name, command, self.log, cwd=self.workdir, die_with_parent=self.die_with_parent
        )
        self.process.start()
        try:
            self.process.wait_ready(probe, self.start_timeout, what)
        except ProcessError as exc:
            self.process.stop()
            raise ServiceError(str(exc)) from exc

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
    """In the child before exec: ask Linux for SIGTERM when the parent dies (PR_SET_PDEATHSIG),
    so a test run or `quantcore up` killed outright (no teardown) leaves no process behind."""
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
        if not alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie does not count); reaps it if it is our child."""
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
