"""quantcore.lakemirror's pure parts and its cache budget (local files only; the copies from S3
are tested on moto's S3 server by tests/integration/test_stream_s3_checkpoint.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from quantcore import lakemirror


def test_a_location_is_a_bucket_and_a_key_prefix() -> None:
    assert lakemirror.parse("s3a://b/lake/feed") == lakemirror.Location("b", "lake/feed/")
    assert lakemirror.parse("s3a://b") == lakemirror.Location("b", "")
    for bad in ("s3://b/x", "/data/lake", "s3a:///x"):
        with pytest.raises(ValueError, match="s3a://"):
            lakemirror.parse(bad)


def _copy(root: Path, name: str, size: int, used: float) -> Path:
    path = root / "sink" / "signals" / "date=2026-12-05" / "symbol=BTCUSDT" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (used, used))
    return path


def test_eviction_removes_the_copies_used_longest_ago_and_spares_those_in_use(
    tmp_path: Path,
) -> None:
    now = 100_000.0
    mirror = lakemirror.Mirror("s3a://b/lake", tmp_path, client=object(), max_bytes=150)
    oldest = _copy(tmp_path, "a.parquet", 100, now - 5000)
    older = _copy(tmp_path, "b.parquet", 100, now - 4000)
    recent = _copy(tmp_path, "c.parquet", 100, now - 10)  # a read may be using it
    busy = _copy(tmp_path, "d.parquet", 100, now - 5)
    assert mirror.evict(now) == [oldest, older]
    assert {p.name for p in tmp_path.rglob("*.parquet")} == {recent.name, busy.name}
    # Over budget still, but what is left is in use: kept.
    assert mirror.evict(now) == []
    assert mirror.evict(now + lakemirror.IN_USE_S) == [recent]
