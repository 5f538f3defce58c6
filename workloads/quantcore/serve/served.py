"""Which symbols the server serves: those of the routing table, re-read when its file changes.

Redis keeps a symbol's last value after the symbol leaves the feed (nothing deletes it, and
the stream job may still write it while the last records drain), so the symbols held in
Redis are not the served set. The routing table is: it names exactly the symbols the feed
carries. The operator mounts its `<feed>-routing` ConfigMap into the serving pods and local
mode passes the file it writes; a server given no table serves whatever Redis holds.

`ServedSymbols` is the state and its transitions (no I/O); `watch_file` feeds it a file.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from quantcore.routing import RoutingTable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    """What one new table did to the served set."""

    added: frozenset[str]
    removed: frozenset[str]


class ServedSymbols:
    """The served set. Without a table (`routed=False`) every symbol is served."""

    def __init__(self, routed: bool) -> None:
        self.routed = routed
        self._symbols: frozenset[str] = frozenset()
        self.version: int | None = None
        # Until the first table arrives a routed server serves nothing: better empty than stale.
        self.loaded = not routed

    def allows(self, symbol: str) -> bool:
        return not self.routed or symbol in self._symbols

    def select(self, symbols: Iterable[str]) -> list[str]:
        """`symbols` that are served, sorted."""
        return sorted(s for s in symbols if self.allows(s))

    @property
    def symbols(self) -> frozenset[str] | None:
        """The served set, or None when every symbol is served."""
        return self._symbols if self.routed else None

    def apply(self, table: RoutingTable) -> Change | None:
        """Take a new table; None when it is older than the one held (and so ignored)."""
        if self.version is not None and table.version < self.version:
            log.warning(
                "ignoring routing table version %d < %d",
                table.version,
                self.version,
                extra={"routing_version": table.version},
            )
            return None
        new = frozenset(table.symbols)
        change = Change(added=new - self._symbols, removed=self._symbols - new)
        self._symbols = new
        self.version = table.version
        self.loaded = True
        return change


FileSignature = tuple[int, int, int]


def signature(path: Path) -> FileSignature | None:
    """What changes when the file is replaced: a ConfigMap volume swaps a symlink, so the
    inode changes even when size and mtime would not."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def read_table(path: Path) -> RoutingTable:
    return RoutingTable.from_json(path.read_text())


async def watch_file(
    path: Path,
    on_table: Callable[[RoutingTable], None],
    on_error: Callable[[Exception], None],
    poll_s: float = 0.5,
) -> None:
    """Call `on_table` with the file's table at start and after every change, for ever.

    A missing, half-written or broken file keeps the current table (on_error is told); the
    next change is read again.
    """
    seen: FileSignature | None = None
    while True:
        current = signature(path)
        if current is not None and current != seen:
            seen = current
            try:
                table = read_table(path)  # a few KiB on tmpfs
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error(
                    "routing file %s unreadable, keeping the current table: %s",
                    path,
                    exc,
                    extra={"path": str(path)},
                )
                on_error(exc)
            else:
                on_table(table)
        await asyncio.sleep(poll_s)
