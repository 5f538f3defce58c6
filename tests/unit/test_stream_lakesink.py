"""The stream job refuses a lake sink written with another checkpoint (local directories): its
file sink would skip the new checkpoint's first batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantcore.stream import job


def _config(tmp_path: Path, lake: Path) -> job.StreamConfig:
    return job.StreamConfig(
        kafka="k", redis_url="r", checkpoint=str(tmp_path / "checkpoint"), lake=str(lake)
    )


def test_a_fresh_lake_and_its_own_checkpoint_pass(tmp_path: Path) -> None:
    config = _config(tmp_path, tmp_path / "lake" / "run-1")
    job.refuse_foreign_sinks(config)  # nothing written yet
    (tmp_path / "lake" / "run-1" / "signals" / "_spark_metadata").mkdir(parents=True)
    (tmp_path / "lake" / "run-1" / "signals" / "_spark_metadata" / "0").write_text("v1\n")
    offsets = tmp_path / "checkpoint" / "lake-signals" / "offsets"
    offsets.mkdir(parents=True)
    (offsets / "0").write_text("v1\n")
    job.refuse_foreign_sinks(config)  # the sink's own checkpoint, restarted


def test_a_sink_of_another_checkpoint_is_refused(tmp_path: Path) -> None:
    log_dir = tmp_path / "lake" / "run-1" / "books" / "_spark_metadata"
    log_dir.mkdir(parents=True)
    (log_dir / "0").write_text("v1\n")
    with pytest.raises(ValueError, match="written with another checkpoint"):
        job.refuse_foreign_sinks(_config(tmp_path, tmp_path / "lake" / "run-1"))
    # Off without a lake, and not checked on S3 (the job cannot list it before Spark starts).
    job.refuse_foreign_sinks(job.StreamConfig(kafka="k", redis_url="r", checkpoint="/c"))
    job.refuse_foreign_sinks(
        job.StreamConfig(kafka="k", redis_url="r", checkpoint="/c", lake="s3a://b/lake")
    )
