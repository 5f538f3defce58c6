"""`quantcore up`: Redis, Kafka, topics, routing, (replay), feed shards, the Spark job and the
gRPC server as local processes, then the live view. Ctrl-C stops every one of them.

The routing table and topics come from the operator's own planner and topic code, fed a
MarketFeed spec that describes this machine, so local mode cannot drift from the cluster.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from quantcore import logs
from quantcore.localmode import security
from quantcore.localmode.source import default_recordings_dir
from quantcore.stream.job import TRIGGERS

STEPS = 9

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        choices=["auto", "live", "replay", "archive"],
        default="auto",
        help="live Binance, a replay of recordings, live when reachable (default), or a replay"
        " of the interval --from/--to archived in the lake (see --archive)",
    )
    parser.add_argument("--from", dest="start", help="--source archive: UTC date or time")
    parser.add_argument("--to", dest="end", help="--source archive: UTC date or time")
    parser.add_argument(
        "--archive",
        type=Path,
        default=None,
        help="--source archive: the lake to replay from (default: DIR/lake, earlier runs')",
    )
    parser.add_argument("--symbols", nargs="+", default=None, help="default: the recorded ones")
    parser.add_argument(
        "--recordings",
        type=Path,
        default=default_recordings_dir(),
        help="directory of <symbol>_<date>.gz recordings for replay",
    )
    parser.add_argument("--dir", type=Path, default=Path(".dev/up"), help="state and logs")
    parser.add_argument("--port", type=int, default=50051, help="gRPC port (0: any free port)")
    parser.add_argument("--partitions", type=int, default=2, help="Kafka partitions per topic")
    parser.add_argument("--symbols-per-shard", type=int, default=1, help="feed shard size")
    # Real-time by default, as in the cluster; continuous and micro-batch on request
    # (bench.stream_latency compares the three).
    parser.add_argument("--trigger", choices=TRIGGERS, default="realtime")
    parser.add_argument(
        "--no-lake",
        action="store_true",
        help="keep no history (default: signals, books and trades as Parquet in DIR/lake,"
        " kept across runs; `quantcore history` reads it)",
    )
    parser.add_argument(
        "--lake-interval",
        type=float,
        default=30.0,
        help="seconds between the lake's commits (fresher history, more small files; default 30)",
    )
    parser.add_argument(
        "--lake-retention-days",
        type=int,
        default=7,
        help="days the lake keeps a file after writing it (0: all; default 7)",
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=600.0, help="seconds to wait for the first signal"
    )
    parser.add_argument(
        "--prometheus",
        choices=["auto", "on", "off"],
        default="auto",
        help="a Prometheus scraping every process, with the alert rules: when installed"
        " (auto, default), always (on: fail without it) or never",
    )
    parser.add_argument(
        "--prometheus-port", type=int, default=0, help="Prometheus's port (0: any free port)"
    )
    parser.add_argument(
        "--prometheus-interval",
        default="5s",
        help="Prometheus's scrape and rule evaluation interval (default 5s)",
    )
    parser.add_argument(
        "--no-view", action="store_true", help="no live table; run until Ctrl-C or SIGTERM"
    )
    # Text unless asked: its children write to log files under --dir, read by a person.
    logs.add_arguments(parser)
    # --insecure: the one switch for gRPC and Redis alike (quantcore.localmode.security).
    security.add_arguments(parser)
    parser.add_argument(
        "--client-auth",
        choices=["none", "require"],
        default="none",
        help="require the client certificate in DIR/tls too (mutual TLS; default none)",
    )


def say(step: int | None, text: str) -> None:
    prefix = f"[{step}/{STEPS}] " if step is not None else ""
    print(f"quantcore up: {prefix}{text}", flush=True)


def run(args: argparse.Namespace) -> int:
    from quantcore.localmode.pipeline import Pipeline, PipelineError

    # The progress lines (and READY) stay on stdout; what goes wrong is logged on stderr, and
    # every child logs in the same format (inherited through the environment).
    log_format = args.log_format or os.environ.get(logs.FORMAT_ENV) or "text"
    try:
        log_format = logs.configure(
            "up", log_format=log_format.strip().lower(), level=args.log_level
        )
    except ValueError as exc:
        print(f"quantcore up: {exc}", file=sys.stderr)
        return 2
    if args.lake_retention_days < 0:
        print("quantcore up: --lake-retention-days must be 0 (keep all) or more", file=sys.stderr)
        return 2
    os.environ.update(logs.child_environment(log_format))
    # A shell that starts a job in the background hands it SIGINT ignored, and Python then
    # installs no handler: Ctrl-C (or a supervisor's SIGINT) must stop `up` all the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    pipeline = Pipeline(args, say)
    code = 0
    try:
        pipeline.start()
        pipeline.show()
    except KeyboardInterrupt:
        say(None, "stopping (Ctrl-C or SIGTERM)")
    except PipelineError as exc:
        log.error("%s", exc)
        code = 1
    finally:
        left = pipeline.stop()
        if left:
            log.error("still running after stop: %s", ", ".join(left), extra={"children": left})
            code = 1
        else:
            say(None, f"stopped {pipeline.process_count} processes; none left running")
    return code
