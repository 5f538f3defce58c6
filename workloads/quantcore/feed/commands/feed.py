"""`quantcore feed --routing FILE --shard N --kafka BOOTSTRAP --ws-url URL --rest-url URL`.

The operator passes the stream settings and topic names as `QUANTCORE_*` environment variables
(named in `quantcore.feedshard`, which the planner writes them with); they are the argparse
defaults, so a flag still wins.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from quantcore import logs
from quantcore.events import Topics
from quantcore.feedshard import (
    BOOK_TICKER_ENV,
    DEPTH_INTERVAL_ENV,
    DEPTH_LEVELS_ENV,
    METRICS_HOST_ENV,
    METRICS_PORT_ENV,
    POD_METRICS_PORT,
    TRADES_ENV,
    topic_env,
)
from quantcore.kafkaauth import KafkaAuth

if TYPE_CHECKING:
    from quantcore.feed.shard import ShardConfig
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _interval(text: str) -> str:
    """The operator's interval in ms ("100", "1000") or Binance's spelling ("100ms")."""
    value = text.strip().lower().removesuffix("ms")
    if value not in ("100", "1000"):
        raise argparse.ArgumentTypeError(f"depth interval {text!r}: expected 100 or 1000 (ms)")
    return f"{value}ms"


def env_flag(value: bool | str, name: str) -> bool:
    """A flag's value: a bool from the command line or an env string such as "true"/"false"."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{name}={value!r}: expected true or false")


def _in_pod(environ: Mapping[str, str]) -> bool:
    return "KUBERNETES_SERVICE_HOST" in environ


def add_arguments(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> None:
    env = os.environ if environ is None else environ
    in_pod = _in_pod(env)
    parser.add_argument(
        "--routing", required=True, type=Path, help="routing table JSON (re-read on change)"
    )
    parser.add_argument("--shard", required=True, type=int)
    parser.add_argument("--kafka", required=True, help="bootstrap servers")
    parser.add_argument(
        "--ws-url", required=True, help="combined-stream endpoint, e.g. wss://host/stream"
    )
    parser.add_argument("--rest-url", required=True, help="REST base URL for depth snapshots")
    # String defaults go through `type`, so a bad env value is a clean usage error.
    parser.add_argument(
        "--depth-levels",
        type=int,
        default=env.get(DEPTH_LEVELS_ENV, "20"),
        help=f"levels in each book record (env {DEPTH_LEVELS_ENV})",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        # In a pod: the planner's metrics containerPort, so probes and scrapes reach it.
        default=env.get(METRICS_PORT_ENV, str(POD_METRICS_PORT) if in_pod else None),
        help=f"Prometheus /metrics and /healthz (env {METRICS_PORT_ENV}; "
        f"{POD_METRICS_PORT} in a pod)",
    )
    parser.add_argument(
        "--metrics-host",
        default=env.get(METRICS_HOST_ENV, "0.0.0.0" if in_pod else "127.0.0.1"),
        help=f"address the metrics endpoint binds (env {METRICS_HOST_ENV}; all in a pod)",
    )
    parser.add_argument(
        "--topic-prefix",
        default=None,
        help="topics <prefix>.raw/.book/.trades/.quarantine/.flow (overrides the per-topic names)",
    )
    for kind, default in Topics().by_kind().items():
        var = topic_env(kind)
        parser.add_argument(
            f"--topic-{kind}", default=env.get(var, default), help=f"{kind} topic (env {var})"
        )
    parser.add_argument(
        "--diff-speed",
        type=_interval,
        choices=["100ms", "1000ms"],
        default=env.get(DEPTH_INTERVAL_ENV, "100"),
        help=f"diff-depth interval (env {DEPTH_INTERVAL_ENV}: 100 or 1000)",
    )
    parser.add_argument(
        "--partial-depth", type=int, choices=[5, 10, 20], default=None, help="also take depthN"
    )
    parser.add_argument("--no-diff-depth", action="store_true", help="book from partial depth only")
    parser.add_argument(
        "--trades",
        action=argparse.BooleanOptionalAction,
        default=env.get(TRADES_ENV, "true"),
        help=f"take the trade stream (env {TRADES_ENV})",
    )
    parser.add_argument(
        "--book-ticker",
        action=argparse.BooleanOptionalAction,
        default=env.get(BOOK_TICKER_ENV, "true"),
        help=f"take the bookTicker stream (env {BOOK_TICKER_ENV})",
    )
    parser.add_argument("--snapshot-limit", type=int, default=1000)
    parser.add_argument(
        "--linger-ms",
        type=int,
        default=5,
        help="Kafka producer linger: a record's longest wait for its batch (latency vs CPU)",
    )
    parser.add_argument(
        "--idle-probe", type=float, default=10.0, help="seconds of silence before a ping"
    )
    parser.add_argument("--pong-timeout", type=float, default=10.0)
    logs.add_arguments(parser)


def shard_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ShardConfig:
    """The shard's configuration from parsed arguments and the environment (its Kafka
    credentials: quantcore.kafkaauth); raises ValueError on a bad env flag or settings."""
    from quantcore.feed.binance import StreamConfig
    from quantcore.feed.connection import ConnectionSettings
    from quantcore.feed.shard import ShardConfig

    if args.topic_prefix:
        topics = Topics.with_prefix(args.topic_prefix)
    else:
        topics = Topics(
            args.topic_raw,
            args.topic_book,
            args.topic_trades,
            args.topic_quarantine,
            args.topic_flow,
        )
    return ShardConfig(
        routing_path=args.routing,
        shard=args.shard,
        bootstrap=args.kafka,
        ws_url=args.ws_url,
        rest_url=args.rest_url,
        levels=args.depth_levels,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        topics=topics,
        streams=StreamConfig(
            diff_depth=not args.no_diff_depth,
            diff_speed=args.diff_speed,
            partial_levels=args.partial_depth,
            trades=env_flag(args.trades, TRADES_ENV),
            book_ticker=env_flag(args.book_ticker, BOOK_TICKER_ENV),
        ),
        connection=ConnectionSettings(
            idle_probe_s=args.idle_probe, pong_timeout_s=args.pong_timeout
        ),
        snapshot_limit=args.snapshot_limit,
        producer_config={"linger.ms": args.linger_ms},
        # Kafka credentials only from the environment (quantcore.kafkaauth): never arguments.
        kafka_auth=KafkaAuth.from_env(environ),
    )


def run(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import logging
    import signal
    import sys

    from quantcore.feed.shard import Shard

    try:
        logs.configure("feed", **logs.from_args(args), shard=args.shard)
    except ValueError as exc:
        print(f"quantcore feed: {exc}", file=sys.stderr)
        return 2
    try:
        config = shard_config(args)
    except ValueError as exc:
        logging.getLogger(__name__).error("bad configuration: %s", exc)
        return 2

    async def main() -> None:
        # SIGTERM (kubelet, tests) cancels the shard so it flushes the producer on the way out.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await Shard(config).run()

    # uvloop: the shard spends much of its CPU in the event loop (one websocket read per frame).
    # An environment installed before it became a dependency still runs, on asyncio's loop.
    try:
        import uvloop
    except ImportError:
        logging.getLogger(__name__).warning("uvloop not installed: using asyncio's event loop")
        runner = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(main())
    return 0
