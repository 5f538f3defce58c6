"""The child processes of `quantcore up`, stopped together, in reverse start order, for sure.

Each is a `ChildProcess` in its own session with SIGTERM from the kernel should `up` itself be
killed outright; `leftovers()` proves that nothing (not even a grandchild such as Spark's JVM
under the stream job) survived a stop. A child started with `restart_after` is started again
that many seconds after it exits (as a Deployment's pod would be); any other child's exit
fails `check()`.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from quantcore.devservices.process import ChildProcess

C = TypeVar("C", bound=ChildProcess)

log = logging.getLogger(__name__)


@dataclass
class Children:
    """Every process `up` started, stopped in reverse start order."""

    started: list[ChildProcess] = field(default_factory=list)
    # name -> seconds a child waits after exiting before it is started again.
    restart_after: dict[str, float] = field(default_factory=dict)
    _due: dict[str, float] = field(default_factory=dict)  # name -> when it starts again

    def start(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        *,
        restart_after: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ChildProcess:
        if restart_after is not None:
            self.restart_after[name] = restart_after
        return self.add(ChildProcess(name, argv, log, env=env, die_with_parent=True))

    def add(self, child: C) -> C:
        """Start `child` (made with `die_with_parent=True`) as one of these children."""
        child.start()
        self.started.append(child)
        return child

    def check(self) -> list[str]:
        """Raise `ProcessError` (with its log) if a child without a restart delay has exited;
        restart the others when their delay has passed. Logs and returns what it did."""
        events: list[str] = []
        now = time.monotonic()
        for child in self.started:
            code = child.exit_code()
            delay = self.restart_after.get(child.name)
            if code is None or delay is None:
                child.check()
                continue
            due = self._due.get(child.name)
            if due is None:
                self._due[child.name] = now + delay
                events.append(f"{child.name} exited with code {code}; restarting in {delay:.0f}s")
                log.warning(events[-1], extra={"child": child.name, "exit_code": code})
            elif now >= due:
                del self._due[child.name]
                child.kill()  # whatever it left in its process group goes first
                child.start()
                events.append(f"{child.name} restarted")
                log.info(events[-1], extra={"child": child.name})
        return events

    def stop_all(self, grace: float = 10.0) -> None:
        # Signal every group first and then wait, so the grace periods overlap: stopping
        # costs one grace period, not one per child (which a loaded machine can exceed).
        for child in reversed(self.started):
            child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in reversed(self.started):
            if not child.wait_gone(max(0.0, deadline - time.monotonic())):
                child.kill()

    def leftovers(self) -> list[str]:
        return [c.name for c in self.started if c.group_alive()]
