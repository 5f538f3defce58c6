"""Prometheus metrics of the stream job's driver: the relay (signals topic -> Redis) and what
the driver sees of its Spark queries. Served on `quantcore stream --metrics-port`.

The relay counts every row by outcome: applied (newer, stored and published), stale (refused by
the compare-and-set: a replay, a duplicate or an out-of-order row) and malformed (input the job
refused, or a record that is not a row of the job). Its consumer lag per partition comes from
librdkafka's own statistics (`partition_lags`, pure).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

ROW_OUTCOMES = ("applied", "stale", "malformed")
# librdkafka's statistics callback interval: how fresh the lag gauge is.
STATS_INTERVAL_MS = 5000

ROWS_RECEIVED = Counter(
    "quantcore_relay_rows_received_total", "Signals-topic records the relay consumed"
)
ROWS = Counter(
    "quantcore_relay_rows_total",
    "Signals-topic records handled by the relay, by outcome",
    ["outcome"],
)
REDIS_RETRIES = Counter(
    "quantcore_relay_redis_retries_total", "Redis writes retried because Redis was unreachable"
)
BATCH_SECONDS = Histogram(
    "quantcore_relay_batch_seconds",
    "Time to apply one batch of records to Redis (one pipelined round trip)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
REBUILDS = Counter(
    "quantcore_relay_state_rebuilds_total",
    "Rebuilds of Redis's serving state from the signals topic, by outcome",
    ["outcome"],
)
REBUILT_ROWS = Counter(
    "quantcore_relay_state_rebuilt_rows_total",
    "Rows a rebuild wrote to Redis (the newest per symbol and kind of the log it read)",
)
LAST_RECORD = Gauge(
    "quantcore_relay_last_record_timestamp_seconds",
    "Kafka timestamp of the newest signals record the relay consumed (when the job wrote it)",
)
CONSUMER_LAG = Gauge(
    "quantcore_relay_consumer_lag",
    "Records on the signals topic the relay has not consumed yet, per partition",
    ["topic", "partition"],
)
QUERY_ACTIVE = Gauge(
    "quantcore_stream_query_active", "1 while the Spark streaming query runs", ["query"]
)
QUERY_BATCH = Gauge(
    "quantcore_stream_query_batch_id", "Id of the query's last completed batch (epoch)", ["query"]
)
QUERY_INPUT_RATE = Gauge(
    "quantcore_stream_query_input_rows_per_second",
    "Input rows per second of the query's last completed batch",
    ["query"],
)
for _outcome in ROW_OUTCOMES:
    ROWS.labels(_outcome)


def partition_lags(stats: str) -> dict[tuple[str, int], int]:
    """(topic, partition) -> consumer lag from one librdkafka statistics JSON document;
    partitions it has no lag for yet (-1) and its internal partition (-1) are left out."""
    doc: dict[str, Any] = json.loads(stats)
    lags: dict[tuple[str, int], int] = {}
    for topic, info in (doc.get("topics") or {}).items():
        for key, partition in (info.get("partitions") or {}).items():
            lag = partition.get("consumer_lag", -1)
            if int(key) >= 0 and lag is not None and lag >= 0:
                lags[(topic, int(key))] = int(lag)
    return lags


def record_stats(stats: str) -> None:
    """librdkafka's `stats_cb`: publish the lags (called from the consumer's poll)."""
    for (topic, partition), lag in partition_lags(stats).items():
        CONSUMER_LAG.labels(topic, str(partition)).set(lag)


def record_queries(queries: Iterable[Any]) -> None:
    """Each Spark query's state and last progress (pyspark StreamingQuery objects)."""
    for query in queries:
        name = query.name or query.id
        QUERY_ACTIVE.labels(name).set(1 if query.isActive else 0)
        progress = query.lastProgress
        if progress:
            QUERY_BATCH.labels(name).set(progress.get("batchId", -1))
            rate = progress.get("inputRowsPerSecond")
            if rate is not None:
                QUERY_INPUT_RATE.labels(name).set(float(rate))
