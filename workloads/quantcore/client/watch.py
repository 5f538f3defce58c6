"""`quantcore watch`: a live terminal table of the signals streamed by a MarketData server."""

from __future__ import annotations

import argparse


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


def run(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import sys

    from quantcore.client.board import Board
    from quantcore.client.stream import MarketDataClient, Subscription

    symbols = tuple(s.upper() for s in args.symbols)
    board = Board()
    state = {"link": "connecting"}
    client = MarketDataClient(
        args.target,
        Subscription(symbols=symbols),
        on_state=lambda s: state.__setitem__("link", s),
    )
    redraw = not args.plain and sys.stdout.isatty()

    async def consume() -> None:
        import time

        async for update in client.updates():
            board.apply(update, time.time_ns())

    async def draw() -> None:
        import time

        while True:
            status = f"{args.target}  {state['link']}  updates {client.stats.received}"
            lines = board.render(time.time_ns(), status)
            if redraw:
                # Home the cursor and clear below: no scrolling, no flicker of a full clear.
                sys.stdout.write("\x1b[H" + "\n".join(lines) + "\x1b[J\n")
            else:
                sys.stdout.write("\n".join(lines) + "\n\n")
            sys.stdout.flush()
            await asyncio.sleep(args.refresh)

    async def main() -> None:
        if redraw:
            sys.stdout.write("\x1b[2J")
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(consume()), tg.create_task(draw())]
            if args.duration is not None:
                await asyncio.sleep(args.duration)
                for task in tasks:
                    task.cancel()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0
