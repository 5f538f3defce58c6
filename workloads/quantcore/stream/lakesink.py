"""The lake sink: a second sink of the job's queries, writing Parquet through Spark's file sink.

Exactly once, across driver restarts: each lake query has its own checkpoint
(`<checkpoint>/lake-<table>`), and the file sink logs the files of each batch in
`<table>/_spark_metadata` only once the batch's files are written, and skips a batch its log
already holds. A restarted driver replays its last uncommitted batch from the same offsets
(the offsets log is written before the batch runs), so that batch's rows land once in the
log. Files a killed batch left behind are in no log entry: readers list files through the log
(quantcore.lake.committed_files), never by listing directories.

Why a micro-batch query per table rather than the signal queries themselves: Spark's file sink
is not one of real-time mode's sinks, and a query has one sink. The lake queries read the same
topics through the same expressions (quantcore.stream.signals), so their rows are the published
rows, computed the same way from the same records; they trail the live path by at most their
trigger interval, and a slow write never delays a live update.

The location is a local directory or any Hadoop URI; on S3 (`s3a://`) the job's S3A settings
(quantcore.stream.s3a) apply to it as to the checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from quantcore.lake import METADATA_DIR, PARTITION_COLUMNS, sink_ahead_of_checkpoint

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.streaming import DataStreamWriter


def table_location(lake: str, table: str) -> str:
    """`<lake>/<table>`, the URI kept as a string (pathlib folds `s3a://b` into `s3a:/b`)."""
    return f"{lake.rstrip('/')}/{table}"


def _local(location: str) -> Path | None:
    parts = urlsplit(location)
    return Path(parts.path) if parts.scheme in ("", "file") else None


def refuse_foreign_sink(lake: str, table: str, checkpoint: str) -> None:
    """ValueError when the table's sink was written with another checkpoint than `checkpoint`
    (quantcore.lake.sink_ahead_of_checkpoint), checked where both are local directories."""
    sink, query = _local(table_location(lake, table)), _local(checkpoint)
    if sink is None or query is None or not (sink / METADATA_DIR).is_dir():
        return
    log_names = [p.name for p in (sink / METADATA_DIR).iterdir()]
    offsets = query / "offsets"
    planned = [p.name for p in offsets.iterdir()] if offsets.is_dir() else []
    if sink_ahead_of_checkpoint(log_names, planned):
        raise ValueError(
            f"the lake sink {sink} was written with another checkpoint than {checkpoint}: its"
            " first batches would be skipped. Give this checkpoint a new --lake location"
            " (quantcore.lake: one sink per checkpoint)"
        )


def lake_writer(
    rows: DataFrame, lake: str, table: str, checkpoint: str, retention: str = ""
) -> DataStreamWriter:
    """The file sink of one lake table: Parquet partitioned by date and symbol, appended.

    `retention` (a Spark duration, "7d") drops log entries of files older than it when the log
    is compacted, so the log does not grow for ever once retention has removed the files."""
    writer = (
        rows.writeStream.format("parquet")
        .partitionBy(*PARTITION_COLUMNS)
        .outputMode("append")
        .option("path", table_location(lake, table))
        .option("checkpointLocation", checkpoint)
    )
    if retention:
        writer = writer.option("retention", retention)
    return writer
