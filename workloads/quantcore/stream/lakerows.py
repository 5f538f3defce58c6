"""Which rows the lake keeps, and their columns: Spark expressions over the frames the job's
queries already compute (no I/O here; quantcore.stream.lakesink writes them).

- `signals` and `flow`: the book and trade-flow queries' rows, the very frames written to the
  signals topic, restricted to the rows the relay publishes (valid ones; a malformed input's
  row carries only its coordinates and is counted, not published), without the `valid` flag.
- `books` and `trades`: the valid records of the book and trades topics (the same validity
  checks as the signal queries), with their Kafka coordinates and append time.
- `raw`: the raw topic's lines, the log of record (quantcore.lakearchive reads it back as
  recordings); its time column is the receive time.

Every table keeps the exchange sequence, the Kafka coordinates and the hop timestamps, and adds
the partition columns (quantcore.lake): `date`, the UTC day of the exchange event time, and
`symbol`.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from quantcore.lake import PARTITION_COLUMNS, TIME_COLUMN
from quantcore.stream.signals import kafka_append_ns

MS_PER_DAY = 86_400_000


def partition_date(event_time_ms: Column) -> Column:
    """`yyyy-MM-dd` of the UTC day, from epoch days: independent of the session's time zone
    (a launcher may set another), and equal to quantcore.lake.partition_date."""
    return F.date_from_unix_date(F.floor(event_time_ms / F.lit(MS_PER_DAY)).cast("int")).cast(
        "string"
    )


def _with_date(frame: DataFrame) -> DataFrame:
    return frame.withColumn(PARTITION_COLUMNS[0], partition_date(F.col(TIME_COLUMN)))


def published(signal_rows: DataFrame) -> DataFrame:
    """The rows of a signal query (quantcore.stream.signals.book_signals / trade_flow) that the
    relay turns into updates: the valid ones, as they went to the signals topic."""
    return _with_date(signal_rows.where(F.col("valid")).drop("valid"))


def records(parsed: DataFrame, valid: Column) -> DataFrame:
    """The valid input records of a parsed topic (quantcore.stream.signals.parse): every
    record field, its Kafka coordinates and append time."""
    return _with_date(
        parsed.where(valid).select("r.*", "topic", "partition", "offset", "kafka_append_ns")
    )


def raw_lines(kafka: DataFrame) -> DataFrame:
    """The raw topic's records (`<recv ns> <frame>`, keyed by symbol: quantcore.feed.codec
    .raw_line) as the `raw` table: `recv_ns` and `frame`, the recording line's two halves, the
    receive time in ms as the table's time column, and the Kafka coordinates. A record without
    a symbol or a receive time is no line of a recording, and is left out."""
    text = F.col("value").cast("string")
    space = F.instr(text, " ")
    lines = kafka.select(
        F.col("key").cast("string").alias("symbol"),
        F.substring_index(text, " ", 1).cast("long").alias("recv_ns"),
        text.substr(space + 1, F.length(text)).alias("frame"),
        "topic",
        "partition",
        "offset",
        kafka_append_ns(),
    )
    valid = lines.where(
        F.col("symbol").isNotNull() & F.col("recv_ns").isNotNull() & (F.length("frame") > 0)
    )
    return _with_date(valid.withColumn(TIME_COLUMN, F.floor(F.col("recv_ns") / F.lit(1_000_000))))
