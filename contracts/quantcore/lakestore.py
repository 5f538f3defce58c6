"""A lake on the local file system (quantcore.lake's layout): the files its sinks committed, and
retention. The decisions are quantcore.lake's; this module only reads and removes files.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

from quantcore import lake

log = logging.getLogger(__name__)


def table_dirs(root: Path, table: str) -> list[Path]:
    """Every sink's directory of `table` under `root`: `root/<sink>/<table>`, or `root/<table>`
    when `root` is one sink. Only directories with a sink log count."""
    candidates = [root / table, *(child / table for child in sorted(root.glob("*")))]
    return [d for d in candidates if (d / lake.METADATA_DIR).is_dir()]


def read_log(table_dir: Path) -> dict[str, str]:
    log_dir = table_dir / lake.METADATA_DIR
    return {p.name: p.read_text() for p in log_dir.iterdir() if lake.is_log_file(p.name)}


def committed(table_dir: Path) -> list[Path]:
    """The files the sink's log commits that are still there (retention removes files the log
    keeps naming until its next compaction)."""
    paths = (Path(lake.local_path(uri)) for uri in lake.committed_files(read_log(table_dir)))
    return [p for p in paths if p.is_file()]


def committed_files(root: Path, table: str) -> list[Path]:
    """Every committed file of `table`, over all sinks under `root`."""
    return [path for d in table_dirs(root, table) for path in committed(d)]


def remove_expired(root: Path, retention_days: int, today: date) -> list[Path]:
    """Remove the date partitions past retention (quantcore.lake.expired_days) that the lake
    wrote: the files a sink's log commits, then the directories they leave empty. Anything
    else in the lake's directory (a file someone put there, a partition no log names) stays.
    Returns the files removed."""
    removed: list[Path] = []
    for table in lake.TABLES:
        for table_dir in table_dirs(root, table):
            days = [
                day
                for day in (lake.date_dir_day(p.name) for p in table_dir.iterdir() if p.is_dir())
                if day
            ]
            expired = set(lake.expired_days(days, today, retention_days))
            if not expired:
                continue
            for path in committed(table_dir):
                partition = lake.partition_of(str(path.relative_to(table_dir)))
                if partition and partition.day in expired:
                    path.unlink()
                    # Spark's local file system writes a checksum beside each file.
                    path.with_name(f".{path.name}.crc").unlink(missing_ok=True)
                    removed.append(path)
            for day in expired:
                _remove_empty_dirs(table_dir / f"date={day}")
    if removed:
        log.info(
            "lake retention removed %d files older than %d days",
            len(removed),
            retention_days,
            extra={"event": "lake_retention", "files": len(removed)},
        )
    return removed


def _remove_empty_dirs(top: Path) -> None:
    """`top` and the directories under it that hold nothing (deepest first)."""
    for directory in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True):
        _rmdir_if_empty(directory)
    _rmdir_if_empty(top)


def _rmdir_if_empty(directory: Path) -> None:
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
