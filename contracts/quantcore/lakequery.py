"""The SQL that reads one symbol's rows of one lake table (quantcore.lake), for DuckDB. Pure:
text in, text out; quantcore.lakereader runs it.

Rows come in one total order: exchange event time, exchange sequence, then the file and the
row within it. The first two are what a reader means by "in order"; the last two only break
ties, which exist: two sinks of the same lake can hold the same row (a recording replayed by
two `quantcore up` runs). A total order is what lets a reader page through the rows by
position (`after`, keyset paging) without skipping or repeating a row, however the rows tie.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from quantcore import lake

# DuckDB's own columns for a row's file and its place in it (read_parquet's `filename` and
# `file_row_number`): the tie-breakers of the order, never returned as data.
FILE_COLUMN = "filename"
ROW_COLUMN = "file_row_number"


class QueryError(ValueError):
    """A request the lake's tables cannot answer (an unknown kind or field); the message says
    which and what there is."""


@dataclass(frozen=True)
class Position:
    """Where a row sits in the total order: a reader resumes strictly after it."""

    event_time_ms: int
    sequence: int
    file: str
    row: int


@dataclass(frozen=True)
class Selection:
    """What to read: a symbol's rows of `kind` in [span), the `columns` asked (None: all)."""

    kind: str
    symbol: str
    span: lake.Interval
    columns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in lake.TABLES:
            raise QueryError(f"unknown kind {self.kind!r}; the lake has {', '.join(lake.TABLES)}")


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def order_columns(kind: str) -> tuple[str, str, str, str]:
    return (lake.TIME_COLUMN, lake.SEQUENCE_COLUMN[kind], FILE_COLUMN, ROW_COLUMN)


def _source(files: Sequence[str]) -> str:
    paths = "[" + ", ".join(literal(f) for f in files) + "]"
    return (
        f"read_parquet({paths}, hive_partitioning = true, union_by_name = true,"
        f" filename = true, file_row_number = true)"
    )


def _after(kind: str, position: Position) -> str:
    """Rows strictly after `position` in the total order, as nested comparisons (each bound
    a literal of its column's type)."""
    time, sequence, file, row = (identifier(c) for c in order_columns(kind))
    return (
        f"({time} > {position.event_time_ms} OR ({time} = {position.event_time_ms} AND"
        f" ({sequence} > {position.sequence} OR ({sequence} = {position.sequence} AND"
        f" ({file} > {literal(position.file)} OR ({file} = {literal(position.file)} AND"
        f" {row} > {position.row}))))))"
    )


def select(
    files: Sequence[str],
    selection: Selection,
    *,
    after: Position | None = None,
    limit: int | None = None,
    with_position: bool = False,
) -> str:
    """The SELECT of the selection's columns over exactly `files`, in the total order.
    `after`: only rows past that position; `limit`: at most that many rows; `with_position`:
    the four order columns follow the data columns (a pager reads its next position there)."""
    if not files:
        raise ValueError("a query needs at least one file")
    if selection.columns is None:
        data = "* EXCLUDE (" + f"{identifier(FILE_COLUMN)}, {identifier(ROW_COLUMN)})"
    else:
        data = ", ".join(identifier(c) for c in selection.columns)
    order = ", ".join(identifier(c) for c in order_columns(selection.kind))
    chosen = data + (", " + order if with_position else "")
    span = selection.span
    where = (
        f"symbol = {literal(selection.symbol)}"
        f" AND {identifier(lake.TIME_COLUMN)} >= {span.start_ms}"
        f" AND {identifier(lake.TIME_COLUMN)} < {span.end_ms}"
    )
    if after is not None:
        where += " AND " + _after(selection.kind, after)
    query = f"SELECT {chosen} FROM {_source(files)} WHERE {where} ORDER BY {order}"
    if limit is not None:
        query += f" LIMIT {int(limit)}"
    return query


def describe(files: Sequence[str]) -> str:
    """The statement listing the columns of `files` (name, type, ...), tie-breakers excluded."""
    if not files:
        raise ValueError("a query needs at least one file")
    return (
        f"DESCRIBE SELECT * EXCLUDE ({identifier(FILE_COLUMN)}, {identifier(ROW_COLUMN)})"
        f" FROM {_source(files)}"
    )


def choose_columns(available: Sequence[str], fields: Sequence[str]) -> tuple[str, ...]:
    """The columns asked for (all when `fields` is empty), in the order asked; QueryError
    names the unknown ones."""
    wanted = [f.strip() for f in fields if f.strip()]
    if not wanted:
        return tuple(available)
    unknown = [f for f in wanted if f not in available]
    if unknown:
        raise QueryError(
            f"unknown field(s) {', '.join(unknown)}; this kind has: {', '.join(available)}"
        )
    return tuple(wanted)
