"""The child processes of `quantcore up`, stopped together, in reverse start order, for sure.

Each is a `ChildProcess` in its own session with SIGTERM from the kernel should `up` itself be
killed outright; `leftovers()` proves that nothing (not even a grandchild such as Spark's JVM
under the stream job) survived a stop.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from quantcore.devservices.process import ChildProcess

C = TypeVar("C", bound=ChildProcess)


@dataclass
class Children:
    """Every process `up` started, stopped in reverse start order."""

    started: list[ChildProcess] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], log: Path) -> ChildProcess:
        return self.add(ChildProcess(name, argv, log, die_with_parent=True))

    def add(self, child: C) -> C:
        """Start `child` (made with `die_with_parent=True`) as one of these children."""
        child.start()
        self.started.append(child)
        return child

    def check(self) -> None:
        """Raise `ProcessError` (with its log) if a child has exited."""
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
                child.kill()

    def leftovers(self) -> list[str]:
        return [c.name for c in self.started if c.group_alive()]
