"""`quantcore replay --port P [--speed X] [--loop] [--symbols N] [FILES or DIRS...]`: serve
recordings as Binance would. Without files, the recordings in $QUANTCORE_RECORDINGS (the
runtime image sets it to the recordings baked into it).

`quantcore replay --lake DIR --from T --to T`: serve an archived interval instead, the lake's
`raw` table turned back into recordings (quantcore.feed.archive), once, at recorded pace."""

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
        "--lake",
        type=Path,
        help="serve the interval --from/--to archived in this lake (its raw table), not files",
    )
    parser.add_argument(
        "--from",
        dest="start",
        help="UTC date or time: serve from here; the lines received before it only build the"
        " book a depth request gets (with --lake: the interval's start)",
    )
    parser.add_argument("--to", dest="end", help="with --lake: the interval's end (UTC)")
    parser.add_argument(
        "--export",
        type=Path,
        help="with --lake: write the interval's recordings here (a new directory) and keep them",
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


def start_of(text: str) -> int:
    """--from in ns since the epoch."""
    from quantcore import lake
    from quantcore.feed.archive import NS_PER_MS

    return lake.parse_time(text, end=False) * NS_PER_MS


def archived_files(args: argparse.Namespace) -> list[Path]:
    """The recordings of the archived interval, in --export, else in a directory of our own
    that lasts as long as this process. ValueError for arguments that do not name an interval,
    NothingArchived when the lake holds none of it."""
    import atexit
    import shutil
    import tempfile

    from quantcore import lake
    from quantcore.feed.archive import export

    if args.start is None or args.end is None:
        raise ValueError("--lake needs --from and --to")
    if args.files or args.symbols is not None:
        raise ValueError("--lake serves its archive: give no files and no --symbols")
    if not args.lake.is_dir():
        raise ValueError(f"{args.lake}: no such lake")
    span = lake.interval(args.start, args.end)
    if args.export is not None:
        if args.export.exists():
            raise ValueError(f"--export {args.export} exists; name a new directory")
        out = args.export
    else:
        out = Path(tempfile.mkdtemp(prefix="quantcore-archive-"))
        atexit.register(shutil.rmtree, out, True)
    done = export(args.lake, span, out)
    for item in done:
        print(
            f"archive {item.symbol}: {item.lines - item.history} lines in the interval"
            f" ({item.history} before it, from the last snapshot) -> {item.path}",
            flush=True,
        )
    return [item.path for item in done]


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
        if args.lake is not None:
            files = archived_files(args)
        else:
            files = recording_files(args.files, dict(os.environ))
        start_ns = None if args.start is None else start_of(args.start)
    except (ValueError, LookupError) as error:
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
        replay = Replay(
            files, speed=args.speed, loop=args.loop, symbols=args.symbols, start_ns=start_ns
        )
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
