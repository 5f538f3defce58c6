"""A lake on disk in the file sink's layout (files and logs as Spark writes them), read and
pruned by quantcore.lakestore, and queried by `quantcore history`: committed files only,
retention removes only what the lake wrote, and bad requests fail with a clear message."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import duckdb
import pytest

from quantcore import lakestore
from quantcore.cli import main

DAY_MS = 86_400_000
DEC_4 = 1_764_806_400_000  # 2025-12-04T00:00Z


def _write_part(table_dir: Path, day: str, symbol: str, name: str, rows: list[tuple]) -> Path:
    directory = table_dir / f"date={day}" / f"symbol={symbol}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    values = ", ".join(f"({seq}, {t}, {mid})" for seq, t, mid in rows)
    duckdb.sql(
        f"COPY (SELECT * FROM (VALUES {values}) v(sequence, event_time_ms, mid)) "
        f"TO '{path}' (FORMAT parquet)"
    )
    (directory / f".{name}.crc").write_bytes(b"crc")
    # Written when its newest row arrived: retention ages a file by its write time.
    written = max(t for _, t, _ in rows) / 1000
    os.utime(path, (written, written))
    return path


def _commit(table_dir: Path, batch: int, *files: Path) -> None:
    log_dir = table_dir / "_spark_metadata"
    log_dir.mkdir(parents=True, exist_ok=True)
    entries = [
        json.dumps({"path": f"file:{f}", "size": 1, "isDir": False, "action": "add"}) for f in files
    ]
    (log_dir / str(batch)).write_text("\n".join(["v1", *entries]))
    # Hadoop's local file system writes a binary checksum beside each log file.
    (log_dir / f".{batch}.crc").write_bytes(b"crc\x00\xf1;")


@pytest.fixture
def lake_root(tmp_path: Path) -> Path:
    """Two sinks of `signals`; a file no log commits (a killed batch's); a user's note."""
    root = tmp_path / "lake"
    first = root / "run-1" / "signals"
    old = _write_part(
        first, "2025-11-20", "BTCUSDT", "part-old.parquet", [(1, DEC_4 - 14 * DAY_MS, 1.0)]
    )
    a = _write_part(
        first,
        "2025-12-04",
        "BTCUSDT",
        "part-a.parquet",
        [(10, DEC_4 + 5, 10.5), (11, DEC_4 + 6, 11.5)],
    )
    _commit(first, 0, old)
    _commit(first, 1, a)
    # Written, never committed: the batch was replayed into part-b after a restart.
    _write_part(first, "2025-12-04", "BTCUSDT", "part-orphan.parquet", [(12, DEC_4 + 7, 12.5)])
    b = _write_part(first, "2025-12-04", "BTCUSDT", "part-b.parquet", [(12, DEC_4 + 7, 12.5)])
    _commit(first, 2, b)
    second = root / "run-2" / "signals"
    c = _write_part(
        second, "2025-12-05", "BTCUSDT", "part-c.parquet", [(20, DEC_4 + DAY_MS + 1, 20.5)]
    )
    e = _write_part(
        second, "2025-12-05", "ETHUSDT", "part-e.parquet", [(7, DEC_4 + DAY_MS + 2, 7.5)]
    )
    _commit(second, 0, c, e)
    (first / "date=2025-11-20" / "notes.txt").write_text("mine")
    return root  # fmt: skip


def test_committed_files_are_those_of_every_sinks_log(lake_root: Path):
    names = sorted(p.name for p in lakestore.committed_files(lake_root, "signals"))
    assert names == ["part-a.parquet", "part-b.parquet", "part-c.parquet", "part-e.parquet", "part-old.parquet"]  # fmt: skip
    assert lakestore.committed_files(lake_root, "books") == []


def test_retention_removes_only_the_lakes_own_expired_files(lake_root: Path):
    dec_5 = DEC_4 + DAY_MS
    removed = lakestore.remove_expired(lake_root, 7, dec_5)
    assert [p.name for p in removed] == ["part-old.parquet"]
    old_day = lake_root / "run-1" / "signals" / "date=2025-11-20"
    # The user's file stays, so its directory does; the lake's file, its checksum and the
    # directory they leave empty are gone.
    assert sorted(p.name for p in old_day.rglob("*")) == ["notes.txt"]
    _write_part(old_day.parent, "2025-11-20", "BTCUSDT", "part-x.parquet", [(2, DEC_4 - 14 * DAY_MS, 2.0)])  # fmt: skip
    # A file no log names is not the lake's to remove, however old.
    assert lakestore.remove_expired(lake_root, 7, dec_5) == []
    assert lakestore.remove_expired(lake_root, 0, dec_5 + 3650 * DAY_MS) == []
    assert len(lakestore.remove_expired(lake_root, 1, dec_5 + 3650 * DAY_MS)) == 4
    assert not (lake_root / "run-2" / "signals" / "date=2025-12-05").exists()


def test_retention_counts_write_time_not_the_rows_day(lake_root: Path):
    """A replay of an old day, written now, is kept as long as a live day."""
    now_s = DEC_4 / 1000 + 3650 * 86_400
    for path in lakestore.committed_files(lake_root, "signals"):
        os.utime(path, (now_s, now_s))
    assert lakestore.remove_expired(lake_root, 7, int(now_s * 1000)) == []


def _history(
    lake_root: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    code = main(["history", "--lake", str(lake_root), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_history_reads_committed_rows_across_sinks(lake_root: Path, capsys):
    code, out, err = _history(
        lake_root, capsys, "BTCUSDT", "--from", "2025-12-04", "--to", "2025-12-05",
        "--format", "csv", "--fields", "sequence,mid",
    )  # fmt: skip
    assert code == 0, err
    # The orphan's row (sequence 12 a second time) is not read; ETHUSDT's rows neither.
    assert list(csv.reader(io.StringIO(out))) == [
        ["sequence", "mid"], ["10", "10.5"], ["11", "11.5"], ["12", "12.5"], ["20", "20.5"]
    ]  # fmt: skip
    code, out, _ = _history(
        lake_root, capsys, "BTCUSDT", "--from", "2025-12-04T00:00:00.006", "--to", "2025-12-05",
        "--fields", "sequence",
    )  # fmt: skip
    assert code == 0
    assert out.split() == ["sequence", "11", "12", "20"]


def test_history_writes_parquet(lake_root: Path, capsys, tmp_path: Path):
    target = tmp_path / "out.parquet"
    code, _, err = _history(
        lake_root, capsys, "BTCUSDT", "--from", "2025-12-05", "--to", "2025-12-05",
        "--format", "parquet", "--output", str(target),
    )  # fmt: skip
    assert code == 0, err
    assert duckdb.sql(f"SELECT sequence, mid, symbol FROM '{target}'").fetchall() == [
        (20, 20.5, "BTCUSDT")
    ]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--from", "soon", "--to", "2025-12-05"], 2, "not a date or time: 'soon'"),
        (["--from", "2025-12-06", "--to", "2025-12-05T00:00"], 2, "must be after --from"),
        (["--from", "2025-12-04", "--to", "2025-12-05", "--fields", "mid,nope"], 2,
         "unknown field(s) nope; this kind has: sequence, event_time_ms, mid"),
        (["--from", "2025-12-04", "--to", "2025-12-05", "--format", "parquet"], 2,
         "--format parquet writes a file: name it with --output"),
        (["--from", "2025-12-04", "--to", "2025-12-05", "--kind", "trades"], 1,
         "holds no trades of BTCUSDT"),
        (["--from", "2024-01-01", "--to", "2024-01-02"], 1, "holds no signals of BTCUSDT"),
    ],
)  # fmt: skip
def test_history_refuses_bad_requests_clearly(lake_root, capsys, args, code, message):
    got, out, err = _history(lake_root, capsys, "BTCUSDT", *args)
    assert (got, out) == (code, "")
    assert message in err


def test_history_without_a_lake(tmp_path: Path, capsys):
    code = main(["history", "--lake", str(tmp_path / "none"), "X", "--from", "2025-12-04", "--to", "2025-12-05"])  # fmt: skip
    assert code == 2
    assert "no lake at" in capsys.readouterr().err
