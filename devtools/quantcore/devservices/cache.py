"""Where downloads live: $QUANTCORE_CACHE (default ~/.cache/quantcore), outside the repo."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from quantcore import ownership


def cache_root() -> Path:
    """The cache directory, created on first use and quantcore's own (`quantcore.ownership`):
    stale entries under it are deleted, so a QUANTCORE_CACHE holding anything else is refused.
    """
    default = Path.home() / ".cache" / "quantcore"
    root = Path(os.environ.get("QUANTCORE_CACHE") or default)
    if root == default and root.is_dir() and not ownership.is_ours(root):
        # Named after the project in the user's cache: quantcore's by name, including
        # caches filled before directories carried the marker.
        (root / ownership.MARKER).write_text(ownership.MARKER_TEXT)
    return ownership.claim(root, "QUANTCORE_CACHE")


@contextmanager
def cache_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on `directory` so parallel test runs fill a cache entry once."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
