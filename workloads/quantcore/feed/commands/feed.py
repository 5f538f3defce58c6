"""`quantcore feed --routing FILE --shard N --kafka BOOTSTRAP --ws-url URL --rest-url URL`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--routing", required=True, type=Path, help="routing table JSON (re-read on change)"
    )
    parser.add_argument("--shard", required=True, type=int)
    parser.add_argument("--kafka", required=True, help="bootstrap servers")
    parser.add_argument(
        "--ws-url", required=True, help="combined-stream endpoint, e.g. wss://host/stream"
    )
    parser.add_argument("--rest-url", required=True, help="REST base URL for depth snapshots")
    parser.add_argument("--depth-levels", type=int, default=20, help="levels in each book record")
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="Prometheus /metrics and /healthz"
    )
    parser.add_argument(
        "--topic-prefix", default=None, help="topics <prefix>.raw/.book/.trades/.quarantine"
    )
    parser.add_argument("--diff-speed", choices=["100ms", "1000ms"], default="100ms")
    parser.add_argument(
        "--partial-depth", type=int, choices=[5, 10, 20], default=None, help="also take depthN"
    )
    parser.add_argument("--no-diff-depth", action="store_true", help="book from partial depth only")
    parser.add_argument("--no-trades", action="store_true")
    parser.add_argument("--no-book-ticker", action="store_true")
    parser.add_argument("--snapshot-limit", type=int, default=1000)
    parser.add_argument(
        "--idle-probe", type=float, default=10.0, help="seconds of silence before a ping"
    )
    parser.add_argument("--pong-timeout", type=float, default=10.0)
    parser.add_argument("--log-level", default="INFO")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import logging
    import signal

    from quantcore.feed.binance import StreamConfig
    from quantcore.feed.connection import ConnectionSettings
    from quantcore.feed.producer import Topics
    from quantcore.feed.shard import Shard, ShardConfig

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    config = ShardConfig(
        routing_path=args.routing,
        shard=args.shard,
        bootstrap=args.kafka,
        ws_url=args.ws_url,
        rest_url=args.rest_url,
        levels=args.depth_levels,
        metrics_port=args.metrics_port,
        topics=Topics.with_prefix(args.topic_prefix),
        streams=StreamConfig(
            diff_depth=not args.no_diff_depth,
            diff_speed=args.diff_speed,
            partial_levels=args.partial_depth,
            trades=not args.no_trades,
            book_ticker=not args.no_book_ticker,
        ),
        connection=ConnectionSettings(
            idle_probe_s=args.idle_probe, pong_timeout_s=args.pong_timeout
        ),
        snapshot_limit=args.snapshot_limit,
    )

    async def main() -> None:
        # SIGTERM (kubelet, tests) cancels the shard so it flushes the producer on the way out.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await Shard(config).run()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0
