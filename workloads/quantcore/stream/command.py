"""`quantcore stream`: run the signal engine (Kafka book/flow/trades topics -> Redis) until
stopped: the Spark queries (book/flow/trades -> signals topic) and the relay (signals topic ->
Redis)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from quantcore import logs, redisauth
from quantcore.events import BOOK_TOPIC, FLOW_TOPIC, RAW_TOPIC, TRADES_TOPIC
from quantcore.kafkaauth import KafkaAuth
from quantcore.stream.job import TRIGGERS, StreamConfig

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kafka", required=True, help="bootstrap servers, HOST:PORT[,...]")
    parser.add_argument(
        "--redis", required=True, help="rediss://HOST:PORT/DB (TLS) or redis://HOST:PORT/DB"
    )
    redisauth.add_arguments(parser)
    # A string, not a Path: pathlib would fold s3a://bucket/x into s3a:/bucket/x.
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="checkpoint location: a directory or a Hadoop URI (file:///dir, s3a://bucket/dir;"
        " S3 settings: quantcore.stream.s3a)",
    )
    parser.add_argument("--trigger", choices=TRIGGERS, default="realtime")
    parser.add_argument(
        "--lake",
        default="",
        help="write signals, books and trades as Parquet here too (a directory or a Hadoop URI,"
        " one per checkpoint: quantcore.lake); default: no lake",
    )
    parser.add_argument(
        "--lake-interval",
        default=StreamConfig.lake_interval,
        help="how often the lake queries commit a batch",
    )
    parser.add_argument(
        "--lake-retention",
        default="",
        help="a duration (9d): the lake's logs forget files written longer ago (retention must"
        " have removed them by then); default: never",
    )
    parser.add_argument(
        "--lake-compact-every",
        type=float,
        default=StreamConfig.lake_compact_every_s,
        help="seconds between compactions of the lake sink while the job writes it (0: never;"
        " quantcore.stream.lakecompactor)",
    )
    parser.add_argument(
        "--lake-merge-window",
        type=float,
        default=StreamConfig.lake_merge_window_s,
        help="seconds of an open day's files merged into one (quantcore.lakemerge)",
    )
    parser.add_argument(
        "--lake-merge-margin",
        type=float,
        default=StreamConfig.lake_merge_margin_s,
        help="seconds the sink's newest commit must be past a window before it merges (the"
        " skew of the clocks that stamp its files)",
    )
    parser.add_argument(
        "--only",
        choices=["live", "lake"],
        default="",
        help="run the live queries (and the relay) alone, or the lake's alone (default: both)",
    )
    parser.add_argument("--book-topic", default=BOOK_TOPIC)
    parser.add_argument("--trades-topic", default=TRADES_TOPIC, help="counted for malformed trades")
    parser.add_argument("--flow-topic", default=FLOW_TOPIC, help="the shards' trade-flow windows")
    parser.add_argument(
        "--raw-topic", default=RAW_TOPIC, help="the shards' raw frames, archived with --lake"
    )
    parser.add_argument(
        "--signals-topic", default="", help="output topic (default: <book topic>.signals)"
    )
    parser.add_argument("--max-levels", type=int, default=20, help="levels for obi_max")
    parser.add_argument(
        "--realtime-batch",
        default=StreamConfig.realtime_batch,
        help="real-time mode batch (checkpoint) length",
    )
    parser.add_argument(
        "--continuous-epoch",
        default=StreamConfig.continuous_epoch,
        help="continuous mode: how often offsets are committed",
    )
    parser.add_argument("--microbatch-interval", default="0 seconds")
    parser.add_argument(
        "--jars",
        default="",
        # Resolving them is development tooling's job (quantcore.devservices.spark.spark_jars,
        # which `quantcore up` passes); the Spark image has them on its classpath already.
        help="comma-separated Kafka connector jars (default: none beyond Spark's classpath)",
    )
    parser.add_argument(
        "--starting-offsets",
        choices=("earliest", "latest"),
        default="earliest",
        help="where a query without a checkpoint starts reading",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=8,
        help="local[N] task slots: at least 2 x partitions + 1 in real-time or continuous mode"
        " (quantcore.stream.job.task_slots)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve the driver's Prometheus /metrics (relay, queries) on this port",
    )
    parser.add_argument(
        "--metrics-host", default="0.0.0.0", help="address for --metrics-port (default 0.0.0.0)"
    )
    logs.add_arguments(parser)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _config(args: argparse.Namespace) -> StreamConfig:
    return StreamConfig(
        kafka=args.kafka,
        redis_url=args.redis,
        checkpoint=args.checkpoint,
        trigger=args.trigger,
        book_topic=args.book_topic,
        trades_topic=args.trades_topic,
        flow_topic=args.flow_topic,
        raw_topic=args.raw_topic,
        max_levels=args.max_levels,
        realtime_batch=args.realtime_batch,
        continuous_epoch=args.continuous_epoch,
        microbatch_interval=args.microbatch_interval,
        starting_offsets=args.starting_offsets,
        signals_topic=args.signals_topic,
        lake=args.lake,
        lake_interval=args.lake_interval,
        lake_retention=args.lake_retention,
        lake_compact_every_s=args.lake_compact_every,
        lake_merge_window_s=args.lake_merge_window,
        lake_merge_margin_s=args.lake_merge_margin,
        only=args.only,
        # Kafka credentials only from the environment (quantcore.kafkaauth): never arguments.
        kafka_auth=KafkaAuth.from_env(),
    )


def run(args: argparse.Namespace) -> int:
    # The Python side only: Spark's JVM keeps its own log4j output.
    try:
        logs.configure("stream", **logs.from_args(args))
    except ValueError as error:
        print(f"quantcore stream: {error}", file=sys.stderr)
        return 2
    from quantcore.stream import metrics
    from quantcore.stream.job import build_session, refuse_foreign_sinks, session_conf, start
    from quantcore.stream.relay import Relay, RelayConfig, ensure_topic

    try:
        config = _config(args)
        # The S3 settings come from the environment: a bad one is refused before anything starts.
        session_conf(args.threads, checkpoint=config.checkpoint, lake=config.lake)
        refuse_foreign_sinks(config)
    except ValueError as error:
        log.error("%s", error)
        return 2
    jars = [j for j in args.jars.split(",") if j]
    # SIGTERM (how `quantcore up` and the operator stop us) ends as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        # Before Spark starts: a taken port fails the start, not a running job.
        start_http_server(args.metrics_port, addr=args.metrics_host)
    relay_config = RelayConfig(
        config.kafka,
        config.redis_url,
        config.output_topic,
        redisauth.from_args(args),
        config.kafka_auth,
    )
    relay = None
    if config.runs_live:
        ensure_topic(relay_config, like=config.book_topic)
        relay = Relay(relay_config).start()
    compactor = None
    if config.runs_lake and config.lake_compact_every_s > 0:
        from quantcore.stream.lakecompactor import LakeCompactor

        compactor = LakeCompactor(
            config.lake,
            config.lake_compact_every_s,
            window_ms=int(config.lake_merge_window_s * 1000),
            margin_ms=int(config.lake_merge_margin_s * 1000),
        ).start()
    queries = []
    try:
        spark = build_session(
            jars, threads=args.threads, checkpoint=config.checkpoint, lake=config.lake
        )
        queries = start(spark, config)
        # Until a query ends (or fails: this raises) or the relay does.
        while (relay is None or relay.is_alive()) and not spark.streams.awaitAnyTermination(1):
            metrics.record_queries(queries)
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        for query in queries:
            failure = query.exception()
            if failure is not None:
                log.error("query %s failed: %s", query.name, failure, extra={"query": query.name})
            query.stop()
        if relay is not None:
            relay.stop()
        if compactor is not None:
            compactor.stop()
    if relay is not None and relay.failure is not None:
        log.error("relay failed: %s", relay.failure)
        return 1
    return 1 if any(q.exception() is not None for q in queries) else 0
