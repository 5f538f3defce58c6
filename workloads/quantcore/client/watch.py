"""`quantcore watch`: a live terminal table of the signals streamed by a MarketData server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time

from quantcore.client import security


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("symbols", nargs="*", help="symbols to watch (default: every symbol)")
    parser.add_argument("--target", default="127.0.0.1:50051", help="server HOST:PORT")
    parser.add_argument(
        "--refresh", type=float, default=0.25, help="seconds between redraws (default 0.25)"
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument(
        "--plain", action="store_true", help="print a table per refresh instead of redrawing"
    )
    security.add_arguments(parser)


async def live_view(
    target: str,
    symbols: tuple[str, ...] = (),
    *,
    refresh_s: float = 0.25,
    duration_s: float | None = None,
    plain: bool = False,
    banner: str = "",
    credentials: security.ClientCredentials | None = None,
) -> None:
    """Stream from `target` and redraw the table until cancelled (or `duration_s`)."""
    from quantcore.client.board import Board
    from quantcore.client.stream import MarketDataClient, Subscription

    board = Board()
    state = {"link": "connecting"}
    client = MarketDataClient(
        target,
        Subscription(symbols=symbols),
        credentials=credentials or security.ClientCredentials(),
        on_state=lambda s: state.__setitem__("link", s),
    )
    redraw = not plain and sys.stdout.isatty()

    async def consume() -> None:
        async for update in client.updates():
            board.apply(update, time.time_ns())

    async def draw() -> None:
        while True:
            status = f"{target}  {state['link']}  updates {client.stats.received}  (Ctrl-C stops)"
            lines = ([banner] if banner else []) + board.render(time.time_ns(), status)
            if redraw:
                # Home the cursor and clear below: no scrolling and no full-screen flicker.
                sys.stdout.write("\x1b[H" + "\n".join(lines) + "\x1b[J\n")
            else:
                sys.stdout.write("\n".join(lines) + "\n\n")
            sys.stdout.flush()
            await asyncio.sleep(refresh_s)

    if redraw:
        sys.stdout.write("\x1b[2J")
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(consume()), tg.create_task(draw())]
        if duration_s is not None:
            await asyncio.sleep(duration_s)
            for task in tasks:
                task.cancel()


def run(args: argparse.Namespace) -> int:
    try:
        credentials = security.from_arguments(args)
    except security.CredentialsError as exc:
        print(f"quantcore watch: {exc}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            live_view(
                args.target,
                tuple(s.upper() for s in args.symbols),
                refresh_s=args.refresh,
                duration_s=args.duration,
                plain=args.plain,
                credentials=credentials,
            )
        )
    return 0
