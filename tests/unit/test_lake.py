"""The lake's pure decisions (quantcore.lake): which files a sink's log commits, partition
naming, which files a query reads, which days retention removes, and query bounds."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantcore import lake


def _log(*entries: tuple[str, str]) -> str:
    lines = ["v1"]
    for path, action in entries:
        lines.append(
            json.dumps(
                {
                    "path": path,
                    "size": 10,
                    "isDir": False,
                    "modificationTime": 1,
                    "blockReplication": 1,
                    "blockSize": 1,
                    "action": action,
                }
            )
        )
    return "\n".join(lines)


def test_committed_files_are_the_logged_batches_in_order():
    log = {
        "0": _log(("file:/l/t/date=2026-12-05/symbol=A/a.parquet", "add")),
        "1": _log(("file:/l/t/date=2026-12-05/symbol=B/b.parquet", "add")),
        # A batch being written when the driver died: Spark's temporary file, not a batch.
        ".2.c0ffee.tmp": _log(("file:/l/t/date=2026-12-05/symbol=A/orphan.parquet", "add")),
    }
    assert lake.committed_files(log) == [
        "file:/l/t/date=2026-12-05/symbol=A/a.parquet",
        "file:/l/t/date=2026-12-05/symbol=B/b.parquet",
    ]


def test_the_newest_compact_file_replaces_the_batches_before_it():
    log = {
        # Left from before the compaction (Spark deletes them later): already in 9.compact.
        "8": _log(("file:/l/old.parquet", "add")),
        "9.compact": _log(("file:/l/a.parquet", "add"), ("file:/l/b.parquet", "add")),
        "10": _log(("file:/l/c.parquet", "add"), ("file:/l/a.parquet", "delete")),
    }
    assert lake.committed_files(log) == ["file:/l/b.parquet", "file:/l/c.parquet"]


def test_an_empty_log_commits_nothing_and_a_foreign_file_is_refused():
    assert lake.committed_files({}) == []
    with pytest.raises(ValueError, match="not a file sink log"):
        lake.committed_files({"0": '{"path": "x"}'})


def test_local_path_decodes_the_uri_the_log_holds():
    assert lake.local_path("file:/l/t/date=2026-12-05/a%20b.parquet") == (
        "/l/t/date=2026-12-05/a b.parquet"
    )
    assert lake.local_path("file:///l/x.parquet") == "/l/x.parquet"
    with pytest.raises(ValueError, match="not a local file"):
        lake.local_path("s3a://bucket/l/x.parquet")


def test_partition_naming_round_trips():
    assert lake.partition_date(0) == "1970-01-01"
    assert lake.partition_date(1_764_892_799_999) == "2025-12-04"
    assert lake.partition_date(1_764_892_800_000) == "2025-12-05"
    path = f"/lake/run/signals/{lake.partition_path('2025-12-05', 'BTCUSDT')}/part-0.parquet"
    assert lake.partition_of(path) == lake.Partition("2025-12-05", "BTCUSDT")
    assert lake.partition_of("/lake/run/signals/part-0.parquet") is None


def test_a_query_reads_only_its_symbols_days():
    files = [
        "/l/s/date=2026-12-03/symbol=BTCUSDT/a.parquet",
        "/l/s/date=2026-12-04/symbol=BTCUSDT/b.parquet",
        "/l/s/date=2026-12-04/symbol=ETHUSDT/c.parquet",
        "/l/s/date=2026-12-06/symbol=BTCUSDT/d.parquet",
        "/l/s/stray.parquet",
    ]
    assert lake.select_files(files, "BTCUSDT", "2026-12-04", "2026-12-05") == [files[1]]
    assert lake.select_files(files, "BTCUSDT", "2026-12-03", "2026-12-06") == [
        files[0],
        files[1],
        files[3],
    ]


def test_retention_ages_a_file_by_its_write_time():
    now = 1_764_892_800_000  # 2025-12-05T00:00Z
    assert lake.expired(now - 7 * lake.DAY_MS, now, 7)
    assert not lake.expired(now - 7 * lake.DAY_MS + 1, now, 7)
    assert not lake.expired(0, now, 0)  # 0 keeps everything
    with pytest.raises(ValueError, match=r"0 \(keep all\) or more days"):
        lake.expired(now, now, -1)


@given(st.integers(0, 10**13), st.integers(0, 10**13), st.integers(1, 400))
def test_retention_removes_exactly_what_is_older_than_the_window(written, now, keep):
    assert lake.expired(written, now, keep) == (now - written >= keep * lake.DAY_MS)


def test_only_date_directories_name_days():
    assert lake.date_dir_day("date=2026-12-05") == "2026-12-05"
    assert lake.date_dir_day("date=2026-13-05") is None
    assert lake.date_dir_day("_spark_metadata") is None
    assert lake.date_dir_day("notes-date=2026-12-05") is None


def test_query_bounds():
    day = lake.interval("2026-12-05", "2026-12-05")
    assert day.end_ms - day.start_ms == 86_400_000
    assert (day.first_day, day.last_day) == ("2026-12-05", "2026-12-05")
    hour = lake.interval("2026-12-05T10:00", "2026-12-05T11:00:00Z")
    assert hour.end_ms - hour.start_ms == 3_600_000
    offset = lake.interval("2026-12-05T10:00+01:00", "2026-12-05T10:00")
    assert offset.end_ms - offset.start_ms == 3_600_000
    with pytest.raises(ValueError, match="not a date or time"):
        lake.interval("yesterday", "2026-12-05")
    with pytest.raises(ValueError, match="must be after"):
        lake.interval("2026-12-06", "2026-12-05T00:00")


def test_a_sink_ahead_of_its_checkpoint_belongs_to_another():
    # A fresh checkpoint (nothing planned) against a sink with batches: its first batches
    # would be skipped.
    assert lake.sink_ahead_of_checkpoint(["0", "1", ".1.crc"], [])
    assert lake.sink_ahead_of_checkpoint(["9.compact", "10"], ["0", "1"])
    # The log one batch ahead of the commits, never of the plan: a crash between the two.
    assert not lake.sink_ahead_of_checkpoint(["0", "1"], ["0", "1", ".1.crc"])
    assert not lake.sink_ahead_of_checkpoint([], [])
    assert not lake.sink_ahead_of_checkpoint([".0.tmp"], [])
