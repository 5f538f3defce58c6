"""Compacting a lake's sinks: the merges quantcore.lakemerge plans, made with DuckDB and named
in the sink's merge table; the files they replace are removed once no read can be using them.

Two callers: the stream job compacts its own running sink now and then
(quantcore.stream.lakecompactor), locally or on S3, and `quantcore up` compacts its earlier
runs' sinks, which no job writes any more (`compact`).

Readers never see a half-done merge: a merged file is invisible until the merge table names
it, and a merge table appears whole (a rename, one PUT). A compaction interrupted before that
leaves a merged file nobody names (the next one writes another); after it, the retired files
are removed by the next compaction.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from quantcore import lake, lakefiles, lakemerge, lakestore

log = logging.getLogger(__name__)
# Merge tables kept besides the newest: a read that listed them just before the newest
# appeared still finds the one it chose.
OLD_MERGE_TABLES_KEPT = 1
# DuckDB's memory for one merge beside a live pipeline; a day's merge spills to disk past it.
MERGE_MEMORY = "512MB"


@dataclass(frozen=True)
class Compacted:
    table: str  # where: a directory or an s3a:// prefix
    files_before: int
    files_after: int
    bytes_before: int
    bytes_after: int


def compact(root: Path) -> list[Compacted]:
    """Compact every closed sink's tables under the local lake `root` (the caller knows no
    job writes there): each partition becomes one file. Returns what changed."""
    done = []
    for table in lake.TABLES:
        for table_dir in lakestore.table_dirs(root, table):
            files = lakefiles.LocalTable(table_dir)
            result = compact_table(files, table, horizon=None, keep_sources_ms=0)
            if result is not None:
                done.append(result)
    _log_done(done)
    return done


def compact_running(
    location: str,
    *,
    window_ms: int = lakemerge.HOUR_MS,
    margin_ms: int = lakemerge.CLOCK_MARGIN_MS,
    client: object | None = None,
) -> list[Compacted]:
    """One compaction of the running sink at `location` (a directory or an s3a:// URI): the
    windows its job can no longer add to (quantcore.lakemerge.plan)."""
    done = []
    for table in lake.TABLES:
        files = table_files(location, table, client)
        committed = lake.committed_times(files.log())
        horizon = lakemerge.horizon(committed, margin_ms)
        result = compact_table(
            files, table, horizon=horizon, window_ms=window_ms, committed=committed
        )
        if result is not None:
            done.append(result)
    _log_done(done)
    return done


def table_files(location: str, table: str, client: object | None = None) -> lakefiles.TableFiles:
    """A sink's table at `location` (a directory or an s3a:// URI)."""
    from quantcore import lakemirror

    if lakemirror.is_remote(location):
        where = lakemirror.parse(location)
        return lakefiles.S3Table(
            client or lakemirror.s3_client(), where.bucket, f"{where.prefix}{table}/"
        )
    return lakefiles.LocalTable(Path(lake.local_path(location)) / table)


def compact_table(
    files: lakefiles.TableFiles,
    table: str,
    *,
    horizon: int | None,
    window_ms: int = lakemerge.HOUR_MS,
    keep_sources_ms: int = lakemerge.KEEP_SOURCES_MS,
    committed: Mapping[str, int] | None = None,
) -> Compacted | None:
    """Make the table's due merges (`horizon`: quantcore.lakemerge.plan), name them in a new
    merge table, and remove the retired files that are due. None when nothing changed.
    `committed`: the sink's log (quantcore.lake.committed_times) when the caller has read it
    already (on S3 the log is the pass's largest read)."""
    if committed is None:
        committed = lake.committed_times(files.log())
    current = lakefiles.merge_table(files)
    jobs = lakemerge.plan(committed, current, horizon_ms=horizon, window_ms=window_ms)
    done: dict[lakemerge.Job, str] = {}
    sizes = [0, 0]
    with tempfile.TemporaryDirectory(prefix="quantcore-merge-") as scratch:
        for job in jobs:
            made = _merge(files, job, table, Path(scratch))
            if made is not None:
                done[job], before, after = made
                sizes[0] += before
                sizes[1] += after
    now_ms = int(time.time() * 1000)
    updated, due = lakemerge.after(current, done, now_ms, keep_ms=keep_sources_ms)
    if updated == current:
        return None
    names = files.merge_names()
    files.write_merges(lakemerge.next_name(names), lakemerge.to_json(updated))
    older = lakemerge.table_names(names)
    for name in older[: max(0, len(older) - OLD_MERGE_TABLES_KEPT)]:
        files.remove_merges(name)
    for uri in due:
        files.remove(uri)
    if not done:
        return None
    return Compacted(
        str(files),
        files_before=sum(len(job.sources) for job in done),
        files_after=len(done),
        bytes_before=sizes[0],
        bytes_after=sizes[1],
    )


def _merge(
    files: lakefiles.TableFiles, job: lakemerge.Job, table: str, scratch: Path
) -> tuple[str, int, int] | None:
    """The job's sources merged into one published file: (its URI, bytes before, after).
    Sources gone (retention removed them) are left out; None when none is left."""
    import duckdb

    local = [(uri, files.fetch(uri, scratch)) for uri in job.sources]
    present = [(uri, path) for uri, path in local if path is not None]
    if not present:
        return None
    names = [str(path) for _, path in present]
    out = scratch / lakefiles.merged_name()
    # The readers' order (event time, sequence, then the source's place in the job and the
    # row's in its file: ties keep their order), so a read of the merged file scans in order.
    query = f"""
        COPY (
            SELECT * EXCLUDE (filename, file_row_number)
            FROM read_parquet($files, filename = true, file_row_number = true,
                              hive_partitioning = false)
            ORDER BY "{lake.TIME_COLUMN}", "{lake.SEQUENCE_COLUMN[table]}",
                     list_position($files, filename), file_row_number
        ) TO '{out}' (FORMAT parquet, COMPRESSION zstd)
    """
    with duckdb.connect() as connection:
        connection.execute("SET threads = 1")  # beside a live pipeline: one core at most
        connection.execute(f"SET memory_limit = '{MERGE_MEMORY}'")
        connection.execute("SET temp_directory = ?", [str(scratch / "spill")])
        connection.execute(query, {"files": names})
    before = sum(path.stat().st_size for _, path in present)
    after = out.stat().st_size
    uri = files.publish(out, beside=present[0][0])
    for _, path in present:
        if path.parent == scratch:  # a downloaded copy
            path.unlink()
    return uri, before, after


def _log_done(done: list[Compacted]) -> None:
    if done:
        log.info(
            "lake compaction: %d files merged into %d (%d -> %d bytes)",
            sum(c.files_before for c in done),
            sum(c.files_after for c in done),
            sum(c.bytes_before for c in done),
            sum(c.bytes_after for c in done),
            extra={"event": "lake_compaction", "tables": len(done)},
        )
