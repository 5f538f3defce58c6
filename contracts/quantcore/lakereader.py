"""Reading a local lake's rows with an embedded DuckDB: the I/O under `quantcore history` and
the History RPC. Which files (quantcore.lakestore: the ones the sinks' logs commit, of the
symbol's partitions for the days asked) and which SQL (quantcore.lakequery) are decided
elsewhere; this module lists, asks DuckDB and hands back plain rows.

DuckDB is given the list of committed files, never a glob: a glob would also read the files of
a batch a killed driver wrote but never committed, whose rows the restarted batch wrote again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantcore import lake, lakequery, lakestore

if TYPE_CHECKING:
    import duckdb


class NothingStored(LookupError):
    """The lake holds no file of the symbol's partitions for the interval."""


@dataclass(frozen=True)
class Plan:
    """A selection with its columns chosen, and the committed files it reads."""

    selection: lakequery.Selection
    files: tuple[str, ...]
    column_types: tuple[str, ...]  # DuckDB's type of each selected column

    @property
    def columns(self) -> tuple[str, ...]:
        assert self.selection.columns is not None
        return self.selection.columns


@dataclass(frozen=True)
class Page:
    rows: list[tuple[Any, ...]]  # the selected columns only
    last: lakequery.Position | None  # where the page's last row sits; None when empty
    more: bool  # rows follow this page in the plan


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB; `threads` caps the cores one query may take (a server shares
    them with its live streams)."""
    import duckdb  # here: `quantcore --help` imports the history command, not DuckDB

    config: dict[str, str | bool | int | float | list[str]] = {}
    if threads:
        config["threads"] = threads
    return duckdb.connect(config=config)


def plan(
    root: Path,
    kind: str,
    symbol: str,
    span: lake.Interval,
    fields: Sequence[str] = (),
    *,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> Plan:
    """What a read of `symbol`'s `kind` rows over `span` reads: its committed files and its
    columns. QueryError for an unknown kind or field, NothingStored when no file matches."""
    lakequery.Selection(kind, symbol, span)  # QueryError for an unknown kind, before listing
    files = lake.select_files(
        (str(p) for p in lakestore.committed_files(root, kind)),
        symbol,
        span.first_day,
        span.last_day,
    )
    if not files:
        raise NothingStored(f"the lake holds no {kind} of {symbol} in that interval")
    db = connection or connect()
    described = db.execute(lakequery.describe(files)).fetchall()
    types = {row[0]: str(row[1]) for row in described}
    columns = lakequery.choose_columns([row[0] for row in described], fields)
    return Plan(
        lakequery.Selection(kind, symbol, span, columns),
        tuple(files),
        tuple(types[c] for c in columns),
    )


class PageReader:
    """The plan's rows after `after`, at most `limit` of them, page by page: one DuckDB query
    (a call's worth of rows, sorted once) whose result is fetched as pages are asked for, so a
    page costs its rows, not another pass over the files. One row is looked ahead, to know
    whether more follow (beyond `limit` too: the query asks for limit + 1)."""

    def __init__(
        self,
        plan: Plan,
        after: lakequery.Position | None,
        limit: int,
        *,
        connection: duckdb.DuckDBPyConnection | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"a read returns at least one row, not {limit}")
        self._width = len(plan.columns)
        self._left = limit
        db = connection or connect()
        query = lakequery.select(
            plan.files, plan.selection, after=after, limit=limit + 1, with_position=True
        )
        self._result = db.execute(query)
        self._next = self._result.fetchone()

    def page(self, size: int) -> Page:
        """The next `size` rows at most (fewer at the end or at the limit)."""
        take = min(size, self._left)
        if self._next is None or take < 1:
            return Page([], None, self._next is not None)
        fetched = [self._next, *self._result.fetchmany(take - 1)] if take > 1 else [self._next]
        self._left -= len(fetched)
        self._next = self._result.fetchone()
        time, sequence, file, row = fetched[-1][self._width :]
        last = lakequery.Position(int(time), int(sequence), str(file), int(row))
        width = self._width
        return Page([r[:width] for r in fetched], last, self._next is not None)


def read_page(
    plan: Plan,
    after: lakequery.Position | None,
    limit: int,
    *,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> Page:
    """Up to `limit` rows of the plan strictly after `after`, in the total order, and whether
    more follow."""
    return PageReader(plan, after, limit, connection=connection).page(limit)
