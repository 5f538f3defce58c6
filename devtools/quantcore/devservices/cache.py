"""Where downloads live: $QUANTCORE_CACHE (default ~/.cache/quantcore), outside the repo."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_root() -> Path:
    """The cache directory, created on first use."""
    root = Path(os.environ.get("QUANTCORE_CACHE") or Path.home() / ".cache" / "quantcore")
    root.mkdir(parents=True, exist_ok=True)
    return root


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
