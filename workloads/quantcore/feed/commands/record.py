"""`quantcore record --out FILE SYMBOLS...`: write a recording from a live (or replayed) exchange.

A recording of a live market cannot be made again, so an existing FILE is never replaced
unless `--force` says so. The recording is written beside FILE under a temporary name and
renamed to FILE when it ends, however it ends: after `--duration`, on Ctrl-C or SIGTERM, or
when the connection is lost. Each of those leaves a complete gzip stream.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_WS_URL = "wss://stream.binance.com:9443/stream"
DEFAULT_REST_URL = "https://api.binance.com"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="gzip file to write")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--ws-url", default=DEFAULT_WS_URL)
    parser.add_argument("--rest-url", default=DEFAULT_REST_URL)
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds (default: until Ctrl-C or SIGTERM)"
    )
    parser.add_argument("symbols", nargs="+")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import signal

    from websockets.exceptions import WebSocketException

    from quantcore.feed.binance import StreamConfig
    from quantcore.feed.recorder import Recorder
    from quantcore.ownership import FileBeside, NotOurs

    try:
        out = FileBeside(
            args.out,
            replace=args.force,
            remedy="Choose another --out, or pass --force to replace it.",
        )
    except NotOurs as refused:
        print(f"quantcore record: {refused}", file=sys.stderr)
        return 2
    recorder = Recorder(out.temporary, args.symbols, args.ws_url, args.rest_url, StreamConfig())

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        # SIGTERM ends the recording as Ctrl-C does: the task is cancelled, the file closed.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await recorder.run(args.duration)

    failure = ""
    try:
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            asyncio.run(main())
    except (OSError, WebSocketException) as error:  # refused, unreachable, bad handshake
        failure = f"cannot record from {args.ws_url}: {error}"
    finally:
        if recorder.lines:
            try:
                out.publish()
            except NotOurs as refused:  # the partial file is kept: the message names it
                failure = str(refused)
        else:
            out.discard()
    if recorder.lines and not failure:
        print(f"wrote {recorder.lines} lines to {args.out}", flush=True)
    elif not recorder.lines:
        print(f"recorded nothing; {args.out} was not written", flush=True)
    if recorder.lost or failure:
        print(f"quantcore record: {recorder.lost or failure}", file=sys.stderr, flush=True)
        return 1
    return 0
