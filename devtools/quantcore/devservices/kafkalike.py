"""Records as the Kafka source hands them to Spark (value, topic, partition, offset,
timestamp), in JSON-lines files that Spark's file stream source reads: a test or a benchmark
runs the stream job's own expressions over the recordings without a broker."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from quantcore.events import BookRecord, TradeRecord

if TYPE_CHECKING:
    from pyspark.sql.types import StructType

# Every row's Kafka append time: the expressions under test read the exchange's own times.
APPEND_TIME = "2024-08-08T00:00:00.000Z"


def write(path: Path, records: Iterable[tuple[int, BookRecord | TradeRecord]]) -> None:
    """One JSON line per (offset, record), on the `book` or `trades` topic by its type."""
    with path.open("w") as out:
        for offset, record in records:
            row = {
                "value": record.model_dump_json(),
                "topic": "book" if isinstance(record, BookRecord) else "trades",
                "partition": 0,
                "offset": offset,
                "timestamp": APPEND_TIME,
            }
            out.write(json.dumps(row) + "\n")


def schema() -> StructType:
    """The Kafka source's columns, for `spark.readStream.schema(...)`."""
    from pyspark.sql.types import (
        IntegerType,
        LongType,
        StringType,
        StructField,
        StructType,
        TimestampType,
    )

    return StructType(
        [
            StructField("value", StringType()),
            StructField("topic", StringType()),
            StructField("partition", IntegerType()),
            StructField("offset", LongType()),
            StructField("timestamp", TimestampType()),
        ]
    )
