"""`quantcore serve`: run the MarketData gRPC server over a Redis signal store."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis", required=True, help="signal store, e.g. redis://127.0.0.1:6379/0"
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=50051, help="gRPC port (0: any free port)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus /metrics on this port, on --host (default: no metrics endpoint)",
    )
    parser.add_argument(
        "--routing",
        type=Path,
        default=None,
        help="routing table JSON naming the served symbols, re-read when it changes"
        " (default: every symbol in Redis)",
    )
    parser.add_argument("--max-streams", type=int, default=10_000, help="open Subscribe calls")
    parser.add_argument(
        "--shutdown-grace", type=float, default=5.0, help="seconds to drain on SIGTERM"
    )


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal
    import sys

    from prometheus_client import start_http_server

    from quantcore.serve.server import MarketDataServer, ServerConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = ServerConfig(
        redis_url=args.redis,
        host=args.host,
        port=args.port,
        max_streams=args.max_streams,
        shutdown_grace_s=args.shutdown_grace,
        routing_path=args.routing,
    )

    async def main() -> None:
        if args.metrics_port is not None:
            # Before the gRPC port: a taken metrics port fails the start, not a live server.
            start_http_server(args.metrics_port, addr=args.host)
        server = MarketDataServer(config)
        port = await server.start()
        # One parseable line: `quantcore up` and tests learn the port from it.
        print(f"quantcore serve: listening on {args.host}:{port}", flush=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.stop()))
        await server.wait_stopped()

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"quantcore serve: {exc}", file=sys.stderr)
        return 1
    return 0
