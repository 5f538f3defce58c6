"""A lake on the local file system (quantcore.lake's layout): the files its sinks committed, and
retention. The decisions are quantcore.lake's; this module only reads and removes files.
"""

from __future__ import annotations

import logging
from pathlib import Path

from quantcore import lake, lakefiles

log = logging.getLogger(__name__)


def table_dirs(root: Path, table: str) -> list[Path]:
    """Every sink's directory of `table` under `root`: `root/<sink>/<table>`, or `root/<table>`
    when `root` is one sink. Only directories with a sink log count."""
    candidates = [root / table, *(child / table for child in sorted(root.glob("*")))]
    return [d for d in candidates if (d / lake.METADATA_DIR).is_dir()]


def committed(table_dir: Path) -> list[Path]:
    """The files a read of the sink's table reads (quantcore.lakefiles.view: the log's, merges
    applied) that are still there (retention removes files the log keeps naming until its
    next compaction)."""
    paths = (Path(lake.local_path(uri)) for uri in lakefiles.view(lakefiles.LocalTable(table_dir)))
    return [p for p in paths if p.is_file()]


def committed_files(root: Path, table: str) -> list[Path]:
    """Every committed file of `table`, over all sinks under `root`."""
    return [path for d in table_dirs(root, table) for path in committed(d)]


def remove_expired(root: Path, retention_days: int, now_ms: int) -> list[Path]:
    """Remove the files past retention (quantcore.lake.expired, by each file's modification
    time) that the lake wrote: the files its sinks commit and its merged files, then the
    partition directories they leave empty. Anything else in the lake's directory (a file
    someone put there, one no log names) stays. Returns the files removed."""
    removed: list[Path] = []
    for table in lake.TABLES:
        for table_dir in table_dirs(root, table):
            emptied: set[Path] = set()
            for path in committed(table_dir):
                if lake.expired(int(path.stat().st_mtime * 1000), now_ms, retention_days):
                    lakefiles.remove_local(path)
                    removed.append(path)
                    emptied.add(path.parent)
            for directory in emptied:
                _rmdir_if_empty(directory)  # symbol=...
                _rmdir_if_empty(directory.parent)  # date=...
    if removed:
        log.info(
            "lake retention removed %d files older than %d days",
            len(removed),
            retention_days,
            extra={"event": "lake_retention", "files": len(removed)},
        )
    return removed


def _rmdir_if_empty(directory: Path) -> None:
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
