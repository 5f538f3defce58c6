"""Compacting a closed sink of a local lake: each partition's small files (one per batch) merged
into one by DuckDB, then one compact log file naming the result (quantcore.lake, "compaction of
a closed sink", decides the names; this module reads, writes and removes the files).

Readers never see a half-done compaction: merged files are invisible until the compact log file
names them, which appears by one rename; the files it replaced are removed only after, and a
compaction interrupted before that is finished by the next one (quantcore.lake.superseded).
Only for a sink no job writes any more: a running file sink would go on logging after it.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from quantcore import lake, lakestore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Compacted:
    table_dir: Path
    files_before: int
    files_after: int
    bytes_before: int
    bytes_after: int


def compact(root: Path) -> list[Compacted]:
    """Compact every sink's tables under `root` (all of them closed: the caller knows no job
    writes there); returns what changed, tables already compact left out."""
    done = []
    for table in lake.TABLES:
        for table_dir in lakestore.table_dirs(root, table):
            result = compact_table(table_dir, table)
            if result is not None:
                done.append(result)
    if done:
        log.info(
            "lake compaction: %d files merged into %d (%d -> %d bytes)",
            sum(c.files_before for c in done),
            sum(c.files_after for c in done),
            sum(c.bytes_before for c in done),
            sum(c.bytes_after for c in done),
            extra={"event": "lake_compaction", "tables": len(done)},
        )
    return done


def compact_table(table_dir: Path, table: str) -> Compacted | None:
    """Merge each partition's committed files of one closed table; None when none had two."""
    sink_log = lakestore.read_log(table_dir)
    uris = lake.committed_files(sink_log)
    if not all(_inside(uri, table_dir) for uri in uris):
        # A copy of a lake (its log still names the original's files), or one on S3: not
        # this directory's files to merge or remove.
        log.warning("not compacting %s: its log names files outside it", table_dir)
        return None
    # Finishing an interrupted compaction removes only what the log no longer commits.
    _remove_superseded(table_dir, sink_log)
    groups = lake.compaction_groups(uris)
    if not groups:
        return None
    replaced = {uri: partition for partition, members in groups.items() for uri in members}
    merged: dict[lake.Partition, Path] = {}
    for partition, members in groups.items():
        merged[partition] = _merge(
            table_dir / lake.partition_path(partition.day, partition.symbol),
            [Path(lake.local_path(uri)) for uri in members],
            table,
        )
    entries, written = [], set()
    for uri in uris:
        if uri in replaced:
            path = merged[replaced[uri]]
            if path in written:
                continue
            written.add(path)
            # Named as the log names its neighbours (scheme and escaping as Spark wrote them).
            uri = f"{uri.rsplit('/', 1)[0]}/{path.name}"
        else:
            path = Path(lake.local_path(uri))
        if not path.is_file():  # retention removed it: the new log forgets it
            continue
        stat = path.stat()
        entries.append(lake.add_entry(uri, stat.st_size, stat.st_mtime_ns // 1_000_000))
    log_dir = table_dir / lake.METADATA_DIR
    name = f"{lake.compaction_batch(os.listdir(log_dir))}.compact"
    temporary = log_dir / f".{name}.{uuid.uuid4().hex}.tmp"
    temporary.write_text(lake.log_text(entries))
    os.replace(temporary, log_dir / name)
    before = [Path(lake.local_path(uri)) for uri in replaced]
    result = Compacted(
        table_dir,
        files_before=len(before),
        files_after=len(merged),
        bytes_before=sum(p.stat().st_size for p in before if p.is_file()),
        bytes_after=sum(p.stat().st_size for p in merged.values()),
    )
    _remove_superseded(table_dir, lakestore.read_log(table_dir))
    return result


def _inside(uri: str, directory: Path) -> bool:
    try:
        return Path(lake.local_path(uri)).resolve().is_relative_to(directory.resolve())
    except ValueError:  # a remote URI
        return False


def _merge(directory: Path, files: list[Path], table: str) -> Path:
    """One Parquet file with the rows of `files`, in the readers' order (event time, sequence,
    then the file's place in the log and the row's in its file: ties keep their order)."""
    import duckdb

    out = directory / f"part-compacted-{uuid.uuid4().hex}.zstd.parquet"
    temporary = directory / f".{out.name}.tmp"
    names = [str(f) for f in files]
    query = f"""
        COPY (
            SELECT * EXCLUDE (filename, file_row_number)
            FROM read_parquet($files, filename = true, file_row_number = true,
                              hive_partitioning = false)
            ORDER BY "{lake.TIME_COLUMN}", "{lake.SEQUENCE_COLUMN[table]}",
                     list_position($files, filename), file_row_number
        ) TO '{temporary}' (FORMAT parquet, COMPRESSION zstd)
    """
    with duckdb.connect() as connection:
        connection.execute("SET threads = 1")  # beside a live pipeline: one core at most
        connection.execute(query, {"files": names})
    os.replace(temporary, out)
    return out


def _remove_superseded(table_dir: Path, sink_log: dict[str, str]) -> None:
    """Remove what a finished compaction replaced (per `sink_log`, the table's log as read
    now): the old files and the old log batches."""
    files, log_names = lake.superseded(sink_log)
    for uri in files:
        if not _inside(uri, table_dir):
            continue
        path = Path(lake.local_path(uri))
        path.unlink(missing_ok=True)
        path.with_name(f".{path.name}.crc").unlink(missing_ok=True)  # Spark's checksum, if any
    log_dir = table_dir / lake.METADATA_DIR
    for name in log_names:
        (log_dir / name).unlink(missing_ok=True)
        (log_dir / f".{name}.crc").unlink(missing_ok=True)
