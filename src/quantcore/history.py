"""`quantcore history SYMBOL --from --to`: a symbol's rows from the lake (quantcore.lake), read
by an embedded DuckDB (quantcore.lakereader), printed as a table or written as CSV or Parquet;
with `--target HOST:PORT`, the same rows through a server's History RPC
(quantcore.client.history) instead of a local lake, printed the same way.

DuckDB is given the list of files the sinks' logs commit (quantcore.lakestore), never a glob:
a glob would also read the files of a batch a killed driver wrote but never committed, whose
rows the restarted batch wrote again (quantcore.lake). Only the partitions of the symbol and
the days asked for are listed, so a one-day query reads one day's files.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path
from typing import IO, Any

from quantcore import lake, lakequery, lakereader, lakestore
from quantcore.client import security

FORMATS = ("table", "csv", "parquet")
DEFAULT_LAKE = Path(".dev/up/lake")  # where `quantcore up` keeps it with its default --dir


class HistoryError(ValueError):
    """A request the lake cannot answer; the message says why (exit code 2: bad input)."""


class NothingStored(HistoryError):
    """A valid request the lake holds no rows for (exit code 1)."""


class HistoryFailed(RuntimeError):
    """The server could not answer (unreachable, refused, no lake): exit code 1."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("symbol", help="the symbol, as the exchange names it (BTCUSDT)")
    parser.add_argument(
        "--from",
        dest="start",
        required=True,
        help="UTC date or time (2026-12-05, 2026-12-05T10:30), inclusive",
    )
    parser.add_argument(
        "--to",
        dest="end",
        required=True,
        help="UTC date or time, exclusive; a date means the end of that day",
    )
    parser.add_argument(
        "--kind",
        choices=tuple(lake.TABLES),
        default="signals",
        help="; ".join(f"{name}: {what}" for name, what in lake.TABLES.items()),
    )
    parser.add_argument(
        "--fields", default="", help="comma-separated columns (default: all of the kind's)"
    )
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument(
        "--output", type=Path, default=None, help="write here (required for parquet)"
    )
    parser.add_argument(
        "--lake",
        type=Path,
        default=DEFAULT_LAKE,
        help=f"the lake's directory (default {DEFAULT_LAKE}, `quantcore up`'s)",
    )
    parser.add_argument(
        "--target",
        default=None,
        help="read through this MarketData server's History RPC (HOST:PORT) instead of --lake",
    )
    security.add_arguments(parser)


def _span(args: argparse.Namespace) -> lake.Interval:
    try:
        return lake.interval(args.start, args.end)
    except ValueError as exc:
        raise HistoryError(str(exc)) from None


def _fields(text: str) -> list[str]:
    return [f.strip() for f in text.split(",") if f.strip()]


def query(args: argparse.Namespace) -> tuple[Any, str]:
    """(DuckDB connection, the SELECT) for the request; HistoryError when it cannot be met."""
    span = _span(args)
    if args.format == "parquet" and args.output is None:
        raise HistoryError("--format parquet writes a file: name it with --output")
    if not args.lake.is_dir():
        raise HistoryError(f"no lake at {args.lake} (`quantcore up` writes one under its --dir)")
    connection = lakereader.connect()
    try:
        plan = lakereader.plan(
            args.lake, args.kind, args.symbol, span, _fields(args.fields), connection=connection
        )
    except lakereader.NothingStored:
        connection.close()
        raise NothingStored(
            f"the lake at {args.lake} holds no {args.kind} of {args.symbol} from {args.start}"
            f" to {args.end}"
        ) from None
    except lakequery.QueryError as exc:
        connection.close()
        raise HistoryError(str(exc)) from None
    return connection, lakequery.select(plan.files, plan.selection)


def row_count(root: Path, kind: str) -> int:
    """How many rows the lake under `root` holds of `kind`, over its committed files only."""
    import duckdb

    files = lakestore.committed_files(root, kind)
    if not files:
        return 0
    sources = ", ".join(lakequery.literal(str(f)) for f in files)
    (count,) = duckdb.sql(f"SELECT count(*) FROM read_parquet([{sources}])").fetchone() or (0,)
    return int(count)


def _write_rows(out: IO[str], header: list[str], rows: list[tuple[Any, ...]], fmt: str) -> None:
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return
    cells = [header, *([("" if v is None else str(v)) for v in row] for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    for line in cells:
        out.write(
            "  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) + "\n"
        )


def remote_rows(args: argparse.Namespace) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(columns, rows) of the request, through the History RPC of `args.target`."""
    import asyncio

    import grpc

    from quantcore.client.history import HistoryQuery, history_rows

    span = _span(args)
    if args.format == "parquet":
        raise HistoryError("--format parquet reads a local lake; with --target use csv")
    try:
        credentials = security.from_arguments(args)
    except security.CredentialsError as exc:
        raise HistoryError(str(exc)) from None
    request = HistoryQuery(
        args.symbol, span.start_ms, span.end_ms, args.kind, tuple(_fields(args.fields))
    )
    try:
        names, rows = asyncio.run(history_rows(args.target, request, credentials))
    except grpc.aio.AioRpcError as exc:
        message = f"{args.target}: {exc.code().name}: {exc.details()}"
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            raise HistoryError(message) from None
        raise HistoryFailed(message) from None
    if not names:
        raise NothingStored(
            f"the lake of {args.target} holds no {args.kind} of {args.symbol} from {args.start}"
            f" to {args.end}"
        )
    return names, rows


def _print(args: argparse.Namespace, header: list[str], rows: list[tuple[Any, ...]]) -> None:
    if args.output is None:
        try:
            _write_rows(sys.stdout, header, rows, args.format)
            sys.stdout.flush()
        except BrokenPipeError:
            # `| head` closed the pipe: what it wanted was printed. Quiet at exit too.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    else:
        with args.output.open("w", newline="") as out:
            _write_rows(out, header, rows, args.format)


def run(args: argparse.Namespace) -> int:
    if args.target:
        try:
            header, rows = remote_rows(args)
        except (NothingStored, HistoryFailed) as exc:
            print(f"quantcore history: {exc}", file=sys.stderr)
            return 1
        except HistoryError as exc:
            print(f"quantcore history: {exc}", file=sys.stderr)
            return 2
        _print(args, header, rows)
        return 0
    try:
        connection, select = query(args)
    except NothingStored as exc:
        print(f"quantcore history: {exc}", file=sys.stderr)
        return 1
    except HistoryError as exc:
        print(f"quantcore history: {exc}", file=sys.stderr)
        return 2
    with connection:
        if args.format == "parquet":
            target = lakequery.literal(str(args.output))
            connection.execute(f"COPY ({select}) TO {target} (FORMAT parquet)")
            return 0
        result = connection.execute(select)
        header = [d[0] for d in result.description]
        rows = result.fetchall()
    _print(args, header, rows)
    return 0
