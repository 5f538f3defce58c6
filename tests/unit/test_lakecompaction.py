"""Compaction of a local lake's sink (quantcore.lakecompaction) on files laid out as Spark's
file sink writes them: a running sink's due windows merge, readers read each row once
throughout, and a closed sink ends with one file per partition and nothing it replaced."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from quantcore import lake, lakecompaction, lakefiles, lakemerge, lakestore

T0 = 1_764_806_400_000  # 2025-12-04T00:00Z: the files' commit times (the sink's clock)
DAY = "2025-12-04"


def _sink(table_dir: Path, files: int, every_ms: int) -> list[Path]:
    """`files` batches of one row each for BTCUSDT, committed `every_ms` apart."""
    directory = table_dir / f"date={DAY}" / "symbol=BTCUSDT"
    directory.mkdir(parents=True)
    log_dir = table_dir / lake.METADATA_DIR
    log_dir.mkdir()
    paths = []
    for n in range(files):
        path = directory / f"part-{n:05d}.c000.snappy.parquet"
        duckdb.sql(
            f"COPY (SELECT {n} AS sequence, {T0 + n} AS event_time_ms, {n}.5 AS mid)"
            f" TO '{path}' (FORMAT parquet)"
        )
        (directory / f".{path.name}.crc").write_bytes(b"crc")
        entry = {"path": f"file:{path}", "size": 1, "isDir": False, "action": "add"}
        entry["modificationTime"] = T0 + n * every_ms
        (log_dir / str(n)).write_text("\n".join(["v1", json.dumps(entry)]))
        paths.append(path)
    return paths


def _sequences(root: Path) -> list[int]:
    files = [str(p) for p in lakestore.committed_files(root, "signals")]
    return sorted(
        r[0] for r in duckdb.sql(f"SELECT sequence FROM read_parquet({files})").fetchall()
    )


def test_a_running_sink_merges_its_past_windows_and_reads_each_row_once(tmp_path):
    root = tmp_path / "lake"
    table_dir = root / "sink" / "signals"
    small = _sink(table_dir, 10, every_ms=60_000)  # ten minutes, a file a minute
    files = lakefiles.LocalTable(table_dir)
    horizon = lakemerge.horizon(lake.committed_times(files.log()))
    done = lakecompaction.compact_table(files, "signals", horizon=horizon, window_ms=300_000)
    # The first 5-minute window is over by the sink's clock (newest commit, less the margin).
    assert done is not None
    assert (done.files_before, done.files_after) == (5, 1)
    assert _sequences(root) == list(range(10))
    assert len(lakestore.committed_files(root, "signals")) == 6
    # Its sources stay for reads that chose them; a pass with nothing due changes nothing.
    assert all(p.exists() for p in small)
    again = lakecompaction.compact_table(files, "signals", horizon=horizon, window_ms=300_000)
    assert again is None

    # Closed: one file, and what the merges replaced is gone with its checksums.
    (closed,) = lakecompaction.compact(root)
    assert (closed.files_before, closed.files_after) == (6, 1)
    (only,) = lakestore.committed_files(root, "signals")
    assert only.name.startswith("part-merged-")
    assert _sequences(root) == list(range(10))
    assert not any(p.exists() or p.with_name(f".{p.name}.crc").exists() for p in small)
    leftovers = {p.name for p in only.parent.iterdir()}
    assert leftovers == {only.name}
    # Old merge tables go, the newest and one before it stay.
    assert len(files.merge_names()) == 1 + lakecompaction.OLD_MERGE_TABLES_KEPT
    assert lakecompaction.compact(root) == []


def test_a_source_retention_removed_is_left_out_of_the_merge(tmp_path):
    root = tmp_path / "lake"
    table_dir = root / "sink" / "signals"
    small = _sink(table_dir, 3, every_ms=1)
    small[0].unlink()
    (done,) = lakecompaction.compact(root)
    assert done.files_after == 1
    assert _sequences(root) == [1, 2]
