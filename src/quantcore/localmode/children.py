"""The child processes of `quantcore up`, each in its own process group, stopped for sure.

A child gets its own session, so a terminal's Ctrl-C reaches `up` alone and `up` decides
the order of shutdown; stopping signals the whole group, so grandchildren (Spark's JVM
under the stream job) go too, and `leftovers()` proves nothing survived. Should `up` itself
be killed outright, each child gets SIGTERM from the kernel (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from quantcore.devservices.process import terminate_with_parent


class ChildFailed(RuntimeError):
    """A child exited while it should be running; the message carries its log tail."""


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                preexec_fn=terminate_with_parent,
            )

    @property
    def pgid(self) -> int:
        assert self.popen is not None
        return self.popen.pid  # a session leader's group id is its pid

    def check(self) -> None:
        """Raise ChildFailed if the child is gone."""
        if self.popen is not None and (code := self.popen.poll()) is not None:
            raise ChildFailed(
                f"{self.name} exited with code {code}; log {self.log}:\n{log_tail(self.log)}"
            )

    def signal_group(self, sig: int) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, sig)

    def wait_gone(self, timeout: float) -> bool:
        """Reap the leader and wait until no process of the group is left."""
        if self.popen is None:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.popen.poll()
            if self.popen.returncode is not None and not group_alive(self.pgid):
                return True
            time.sleep(0.05)
        return False


@dataclass
class Children:
    """Every process `up` started, stopped in reverse start order."""

    started: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], log: Path) -> Child:
        child = Child(name, list(argv), log)
        child.start()
        self.started.append(child)
        return child

    def check(self) -> None:
        for child in self.started:
            child.check()

    def stop_all(self, grace: float = 10.0) -> None:
        # Signal every group first and then wait, so the grace periods overlap: stopping
        # costs one grace period, not one per child (which a loaded machine can exceed).
        for child in reversed(self.started):
            child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in reversed(self.started):
            if not child.wait_gone(max(0.0, deadline - time.monotonic())):
                child.signal_group(signal.SIGKILL)
                child.wait_gone(5.0)

    def leftovers(self) -> list[str]:
        return [c.name for c in self.started if c.popen is not None and group_alive(c.pgid)]
