"""`quantcore replay --port P [--speed X] [--loop] [--symbols N] [FILES or DIRS...]`: serve
recordings as Binance would. Without files, the recordings in $QUANTCORE_RECORDINGS (the
runtime image sets it to the recordings baked into it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quantcore import logs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="x recorded pace; 0 = as fast as possible"
    )
    parser.add_argument(
        "--loop", action="store_true", help="start over at the end (ids keep growing)"
    )
    parser.add_argument("--url-file", type=Path, help="also write the URLs here (JSON; a new file)")
    parser.add_argument(
        "--symbols",
        type=int,
        help="serve this many symbols: copies of the recordings under other names "
        "(BTCUSDT, ETHUSDT, BTC1USDT, ETH1USDT, ...)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus /metrics on this port, on --host (default: none)",
    )
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        help=f"recording files, or directories of them (*.gz); default ${RECORDINGS_ENV}",
    )
    logs.add_arguments(parser)


RECORDINGS_ENV = "QUANTCORE_RECORDINGS"


def recording_files(given: list[Path], env: dict[str, str]) -> list[Path]:
    """The files to serve: those given (a directory stands for its *.gz), else the directory
    ${RECORDINGS_ENV} names. Raises ValueError saying what is missing."""
    if not given:
        directory = env.get(RECORDINGS_ENV)
        if not directory:
            raise ValueError(
                f"no recordings given: name files or directories, or set {RECORDINGS_ENV}"
            )
        given = [Path(directory)]
    files: list[Path] = []
    for path in given:
        if path.is_dir():
            found = sorted(path.glob("*.gz"))
            if not found:
                raise ValueError(f"{path} holds no recordings (*.gz)")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"{path}: no such recording")
    return files


def run(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import logging
    import os
    import signal

    import orjson

    from quantcore.feed.replay import Replay, serve
    from quantcore.ownership import FileBeside, NotOurs

    try:
        logs.configure("replay", **logs.from_args(args))
    except ValueError as error:
        print(f"quantcore replay: {error}", file=sys.stderr)
        return 2
    try:
        url_file = (
            None
            if args.url_file is None
            else FileBeside(args.url_file, replace=False, remedy="Choose another --url-file.")
        )
    except NotOurs as refused:
        print(f"quantcore replay: {refused}", file=sys.stderr)
        return 2
    try:
        files = recording_files(args.files, dict(os.environ))
    except ValueError as error:
        print(f"quantcore replay: {error}", file=sys.stderr)
        return 2
    if args.symbols is not None:
        from quantcore.feed.copies import plan

        try:
            plan(files, args.symbols)  # refuses a bad count or a recording it cannot rename
        except ValueError as error:
            print(f"quantcore replay: --symbols: {error}", file=sys.stderr)
            return 2

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        replay = Replay(files, speed=args.speed, loop=args.loop, symbols=args.symbols)
        if args.metrics_port is not None:
            from quantcore.feed.replaymetrics import serve_metrics

            serve_metrics(replay, args.metrics_port, args.host)
        runner, port = await serve(replay, args.host, args.port)
        urls = {
            "ws_url": f"ws://{args.host}:{port}/stream",
            "rest_url": f"http://{args.host}:{port}",
        }
        if url_file is not None:
            url_file.temporary.write_bytes(orjson.dumps(urls))
            url_file.publish()  # whole or absent: a reader never sees half of it
        print(f"replay ws_url={urls['ws_url']} rest_url={urls['rest_url']}", flush=True)
        logging.getLogger(__name__).info(
            "serving %d recording(s) at %s", len(files), urls["ws_url"], extra=urls
        )
        try:
            await replay.play()
            await asyncio.Event().wait()  # keep serving REST and idle sockets after the end
        finally:
            await runner.cleanup()

    # uvloop: a fast replay spends most of its CPU in the event loop (a write per frame);
    # without it (an older environment) asyncio's own loop serves the same protocol.
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        runner(main())
    return 0
