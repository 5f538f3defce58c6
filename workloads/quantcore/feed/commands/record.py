"""`quantcore record --out FILE SYMBOLS...`: write a recording from a live (or replayed) exchange."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_WS_URL = "wss://stream.binance.com:9443/stream"
DEFAULT_REST_URL = "https://api.binance.com"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="gzip file to write")
    parser.add_argument("--ws-url", default=DEFAULT_WS_URL)
    parser.add_argument("--rest-url", default=DEFAULT_REST_URL)
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds (default: until Ctrl-C)"
    )
    parser.add_argument("symbols", nargs="+")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib

    from quantcore.feed.binance import StreamConfig
    from quantcore.feed.recorder import Recorder

    recorder = Recorder(args.out, args.symbols, args.ws_url, args.rest_url, StreamConfig())
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(recorder.run(args.duration))
    print(f"wrote {recorder.lines} lines to {args.out}", flush=True)
    return 0
