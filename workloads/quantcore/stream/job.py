"""The stream job: Kafka source -> signal expressions -> the signals topic, one streaming query
per output, each with its own checkpoint directory and trigger; the relay
(quantcore.stream.relay) takes the signals topic on to Redis.

Why through Kafka rather than a Python `foreach` writer: Spark feeds a Python writer through
SerDeUtil.AutoBatchedPickler, which doubles its batch (in rows) after every pickled batch
under 1 MB and blocks until that many rows have arrived. A real-time task lives for a whole
`realtime_batch`, so the batch grows to thousands of rows and, at a few hundred rows/s,
updates waited seconds (measured: at 10 rows/s, exactly 1 + 2 + ... + 512 rows arrived,
oldest 52 s late, and the rest waited for a 1024-row batch). Spark's own Kafka sink stays in
the JVM and sends every row as it is produced (`linger.ms` 0). Micro-batch mode takes the
same path, so the two modes differ only by their trigger.

What real-time mode (`trigger(realTime=...)`, pyspark 4.2) accepts, from its allowlist
(RealTimeModeAllowlist) and error conditions: source Kafka only; sinks Kafka, console, memory
and `foreach` (`foreachBatch` is not); projections, filters, generators, unions, broadcast
joins, streaming aggregation and deduplication with pipelined shuffles; output mode update only; async progress tracking
with checkpoint interval 0; state store checkpoint format v2. Each long-running task holds
a slot per Kafka partition for the whole batch (`realtime_batch`, also the checkpoint
interval), so the local master gets threads for every partition of every real-time query
(`task_slots`), and one more for the micro-batch counter.

Which query runs where, and on which trigger:
- `book` (book topic -> book signals) and `trade-flow` (flow topic -> trade-flow signals): both
  stateless projections, both on the job's trigger: real-time by default (`--trigger
  realtime`); continuous mode (`trigger(continuous=...)`, projections only) or micro-batch on
  request. Continuous mode never pauses between batches, but measured slower everywhere else:
  a 6-8 ms floor in its Spark hop (real-time: 1 ms), and a higher p99 under the full
  one-machine pipeline. The trade-flow windows themselves are kept by the feed shards
  (quantcore.feed.tradeflow), which publish each symbol's buy and sell volumes per window on
  every trade and on decay ticks; a windowed aggregation here ran as a micro-batch query
  that spent seconds planning each batch (trade flow reached clients 3-7 s late).
- `trades-malformed` (trades topic): micro-batch every `malformed_interval` (10 s): a counter
  needs no latency, and as a real-time query it held two task threads polling the trades
  topic (measured about 18% of a core at 30 symbols, on a machine with two). Malformed book
  and flow records are flagged by their own queries' rows.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

from quantcore.events import (
    BOOK_TOPIC,
    FLOW_TOPIC,
    RAW_TOPIC,
    TRADES_TOPIC,
    BookRecord,
    TradeFlowRecord,
    TradeRecord,
    signals_topic,
)
from quantcore.kafkaacl import stream_group_prefix
from quantcore.kafkaauth import KafkaAuth
from quantcore.stream import s3a

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

log = logging.getLogger(__name__)

Trigger = Literal["realtime", "continuous", "microbatch"]
TRIGGERS: tuple[str, ...] = get_args(Trigger)


@dataclass(frozen=True)
class StreamConfig:
    kafka: str
    redis_url: str
    # A Hadoop URI or a local path: s3a://bucket/prefix, file:///dir, /dir. Each query
    # checkpoints in a subdirectory of it (query_checkpoint).
    checkpoint: str
    trigger: Trigger = "realtime"
    book_topic: str = BOOK_TOPIC
    trades_topic: str = TRADES_TOPIC
    flow_topic: str = FLOW_TOPIC
    # The shards' raw topic: read only with a lake, which archives it (the `raw` table).
    raw_topic: str = RAW_TOPIC
    max_levels: int = 20
    # Real-time mode: how long one batch (and so one checkpoint interval) lasts. Between two
    # batches the tasks stop, the offsets are committed and the next batch is planned and
    # started: measured 0.7-1.9 s during which updates wait (async progress tracking, which
    # would overlap the commits, is refused in real-time mode). At 30 s that delayed 3-8% of
    # updates by up to 1.9 s; over one whole 5-minute batch at 300 updates/s, p99 was 11.9 ms
    # and p99.9 724 ms (bench.stream_latency). A longer batch costs only replay after a
    # crash (the relay's compare-and-set makes replay harmless).
    realtime_batch: str = "5 minutes"
    # Continuous mode: how often the tasks' offsets are committed (an epoch). Tasks never stop
    # for it: the commit runs beside them.
    continuous_epoch: str = "5 seconds"
    # Micro-batch mode: the trigger interval ("0 seconds": start the next batch at once).
    microbatch_interval: str = "0 seconds"
    # The malformed-trade counter's trigger interval (micro-batch always).
    malformed_interval: str = "10 seconds"
    starting_offsets: str = "earliest"
    # Where the queries write their rows (default: derived from the book topic).
    signals_topic: str = ""
    # The stream user's Kafka credentials (quantcore.kafkaacl.STREAM), for every source and sink.
    kafka_auth: KafkaAuth = field(default_factory=KafkaAuth)
    # The lake sink (quantcore.stream.lakesink): a directory or Hadoop URI, one per checkpoint
    # (quantcore.lake); empty: no lake.
    lake: str = ""
    # How often the lake queries commit a batch: each batch adds a file per symbol and table,
    # so shorter means fresher history and more small files.
    lake_interval: str = "30 seconds"
    # A Spark duration ("7d"): the sink logs forget files older than this (retention removes
    # them); empty: never.
    lake_retention: str = ""
    # How often the driver compacts its running lake sink (quantcore.stream.lakecompactor;
    # 0: never), and how much of an open day's files become one (quantcore.lakemerge).
    lake_compact_every_s: float = 300.0
    lake_merge_window_s: float = 3600.0
    lake_merge_margin_s: float = 1.0
    # Which queries this job runs: "live" (the signal queries, to the signals topic), "lake"
    # (the lake's alone, in a job of its own: `quantcore up` runs it at a lower CPU priority,
    # so its bursts wait for the live path) or "" (both).
    only: str = ""

    @property
    def output_topic(self) -> str:
        return self.signals_topic or signals_topic(self.book_topic)

    def query_checkpoint(self, query: str) -> str:
        """The checkpoint location of one query: `<checkpoint>/<query>`, the URI kept as a
        string (a pathlib.Path would fold `s3a://b/x` into `s3a:/b/x`)."""
        return join_location(self.checkpoint, query)

    def __post_init__(self) -> None:
        if not self.checkpoint.strip():
            raise ValueError("checkpoint must name a location, got an empty string")
        if self.trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {', '.join(TRIGGERS)}, got {self.trigger!r}")
        # The signal expressions' own bound (quantcore.stream.signals.MAX_LEVELS).
        if not 1 <= self.max_levels <= 50:
            raise ValueError(f"max_levels must be within 1..50, got {self.max_levels}")
        if self.only not in ("", "live", "lake"):
            raise ValueError(f"only must be live or lake, got {self.only!r}")
        if self.lake_compact_every_s < 0 or self.lake_merge_window_s <= 0:
            raise ValueError("the lake's compaction interval is 0 or more, its window above 0")
        if self.lake_merge_margin_s < 0:
            raise ValueError("the lake's merge margin is 0 seconds or more")
        if self.only == "lake" and not self.lake:
            raise ValueError("a lake-only job needs a lake")

    @property
    def runs_live(self) -> bool:
        return self.only != "lake"

    @property
    def runs_lake(self) -> bool:
        return bool(self.lake) and self.only != "live"


def join_location(base: str, name: str) -> str:
    """`base` + "/" + `name` for a URI or a path, without doubling a trailing slash."""
    return f"{base.rstrip('/')}/{name}"


def task_slots(partitions: int, lake: bool = False) -> int:
    """Local-master threads for topics of `partitions` partitions: a real-time task per
    partition for `book` and for `trade-flow`, held for a whole batch, and one slot free for
    the micro-batch malformed-trade counter (the operator sizes executors the same way); the
    lake's micro-batch queries get a slot of their own, so a lake batch never waits for the
    counter."""
    return 2 * partitions + 1 + (1 if lake else 0)


# Local files without a child process per file. Without Hadoop's native library (pyspark ships
# none), its checksummed local file system runs `chmod` for every file it creates (and again
# for the file's .crc), and the FileContext checkpoint manager runs `readlink` for every
# rename: about 450 processes forked from the driver's JVM per lake batch of 30 symbols
# (counted with strace). The raw local file system writes no .crc files (Parquet and the logs
# carry their own framing) and forks only for the data files' permissions; the FileSystem
# checkpoint manager renames with java.io. Measured in bench.end_to_end --lake on: the
# driver's CPU 0.33 -> 0.27 cores, seconds with the machine saturated per minute 10 -> 7.
LOCAL_FILES_CONF = {"spark.hadoop.fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem"}
# A rename on a local file system is atomic, which is all the FileSystem manager needs; S3A
# checkpoints keep Spark's default.
LOCAL_CHECKPOINT_CONF = {
    "spark.sql.streaming.checkpointFileManagerClass": (
        "org.apache.spark.sql.execution.streaming.checkpointing."
        "FileSystemBasedCheckpointFileManager"
    ),
}


def session_conf(
    threads: int = 8,
    checkpoint: str = "",
    environ: Mapping[str, str] | None = None,
    lake: str = "",
) -> dict[str, str]:
    """Spark settings the job relies on, over quantcore.stream.session's defaults. The local
    master only counts when no launcher gave one (quantcore.stream.session.session_conf); S3A's
    settings join when the checkpoint or the lake is on S3 (s3a_conf)."""
    conf = {
        "spark.master": f"local[{threads}]",
        # Real-time mode requires state store checkpoint format v2 (RocksDB).
        "spark.sql.streaming.stateStore.checkpointFormatVersion": "2",
        "spark.sql.streaming.stateStore.providerClass": (
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
        ),
    }
    on_s3 = checkpoint.startswith("s3a://") or lake.startswith("s3a://")
    if not on_s3:
        # S3A buffers uploads through the local file system and needs the checksummed one
        # (it casts FileSystem.getLocal to LocalFileSystem): with S3A, Hadoop's default stays.
        conf.update(LOCAL_FILES_CONF)
    if not checkpoint.startswith("s3a://"):
        conf.update(LOCAL_CHECKPOINT_CONF)
    if on_s3:
        conf.update(s3a.s3a_conf(os.environ if environ is None else environ))
    return conf


def build_session(
    jars: list[str], threads: int = 8, checkpoint: str = "", lake: str = ""
) -> SparkSession:
    from quantcore.stream import session

    # Python workers must import quantcore: run them in this interpreter.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return session.build_session(
        "quantcore-stream", jars, **session_conf(threads, checkpoint=checkpoint, lake=lake)
    )


def _source(spark: SparkSession, config: StreamConfig, topic: str) -> DataFrame:
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", config.kafka)
        .options(**config.kafka_auth.spark_options())
        # The consumer groups the stream user may use (quantcore.kafkaacl).
        .option("groupIdPrefix", stream_group_prefix(config.book_topic))
        .option("subscribe", topic)
        .option("startingOffsets", config.starting_offsets)
        .option("failOnDataLoss", "false")
        .option("includeHeaders", "false")
        .load()
    )


def _triggered(writer: DataStreamWriter, config: StreamConfig, trigger: str) -> DataStreamWriter:
    if trigger == "realtime":
        # pyspark ships no typing overload for realTime yet.
        return writer.trigger(realTime=config.realtime_batch)  # type: ignore[call-overload]
    if trigger == "continuous":
        return writer.trigger(continuous=config.continuous_epoch)
    return writer.trigger(processingTime=trigger)


def _to_signals_topic(frame: DataFrame, kind: str, config: StreamConfig) -> DataStreamWriter:
    """Rows as JSON (with their kind) keyed by symbol; rows without one (malformed input) get
    a null key."""
    from pyspark.sql import functions as F

    key = F.col("symbol") if "symbol" in frame.columns else F.lit(None).cast("string")
    record = frame.select(
        key.alias("key"),
        F.to_json(F.struct(F.lit(kind).alias("kind"), *frame.columns)).alias("value"),
    )
    return (
        record.writeStream.format("kafka")
        .option("kafka.bootstrap.servers", config.kafka)
        .options(**config.kafka_auth.spark_options())
        .option("topic", config.output_topic)
        # Send each row at once: batching would trade the latency this path exists for.
        .option("kafka.linger.ms", "0")
    )


def start(spark: SparkSession, config: StreamConfig) -> list[StreamingQuery]:
    """Start every query of the job (the lake's too, when configured); returns them running."""
    from quantcore.stream import signals

    books_parsed = signals.parse(_source(spark, config, config.book_topic), BookRecord)
    book = signals.book_signals(books_parsed, config.max_levels)
    trades_parsed = signals.parse(_source(spark, config, config.trades_topic), TradeRecord)
    bad_trades = signals.malformed(trades_parsed, signals.trade_valid())
    flow = signals.trade_flow(
        signals.parse(_source(spark, config, config.flow_topic), TradeFlowRecord)
    )
    # Each query's trigger: "realtime", "continuous" or a micro-batch interval.
    fast = config.trigger if config.trigger != "microbatch" else config.microbatch_interval
    plan = [
        ("book", book, "book", fast),
        ("trade-flow", flow, "trades", fast),
        ("trades-malformed", bad_trades, "trades", config.malformed_interval),
    ]
    queries = []
    for name, frame, kind, trigger in plan if config.runs_live else []:
        writer = (
            _to_signals_topic(frame, kind, config)
            .queryName(name)
            # Continuous mode takes append only; for a projection the two modes are the same.
            .outputMode("append" if trigger == "continuous" else "update")
            .option("checkpointLocation", config.query_checkpoint(name))
        )
        queries.append(_triggered(writer, config, trigger).start())
        every = trigger if trigger in ("realtime", "continuous") else f"every {trigger}"
        log.info("started %s (%s)", name, every, extra={"query": name, "trigger": trigger})
    if config.runs_lake:
        from quantcore.stream import lakerows

        lake_plan = {
            # The very frames the signal queries write to the signals topic.
            "signals": lakerows.published(book),
            "flow": lakerows.published(flow),
            "books": lakerows.records(books_parsed, signals.book_valid()),
            "trades": lakerows.records(trades_parsed, signals.trade_valid()),
            "raw": lakerows.raw_lines(_source(spark, config, config.raw_topic)),
        }
        queries.extend(start_lake(config, lake_plan))
    return queries


def lake_query(table: str) -> str:
    """The lake query's name, and its checkpoint's (`<checkpoint>/lake-<table>`)."""
    return f"lake-{table}"


def refuse_foreign_sinks(config: StreamConfig) -> None:
    """ValueError when a lake table's sink belongs to another checkpoint (local paths)."""
    from quantcore.lake import TABLES
    from quantcore.stream.lakesink import refuse_foreign_sink

    if config.runs_lake:
        for table in TABLES:
            refuse_foreign_sink(config.lake, table, config.query_checkpoint(lake_query(table)))


def start_lake(config: StreamConfig, rows: Mapping[str, DataFrame]) -> list[StreamingQuery]:
    """One file-sink query per lake table (quantcore.stream.lakesink), in micro-batches."""
    from quantcore.stream.lakesink import lake_writer, table_location

    queries = []
    for table, frame in rows.items():
        name = lake_query(table)
        writer = lake_writer(
            frame,
            config.lake,
            table,
            config.query_checkpoint(name),
            retention=config.lake_retention,
        ).queryName(name)
        queries.append(writer.trigger(processingTime=config.lake_interval).start())
        log.info(
            "started %s (every %s) -> %s",
            name,
            config.lake_interval,
            table_location(config.lake, table),
            extra={"query": name, "trigger": config.lake_interval},
        )
    return queries
