"""Rows of the lake as the History RPC carries them (quantcore.v1.HistoryPage): column by
column, each column of one protobuf type chosen from the lake's column type. Pure; the server
encodes what DuckDB returns, a client decodes back the same Python values (int, float, str,
bool, list of float, None), so `quantcore history --target` prints what a local read prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from quantcore.v1 import marketdata_pb2

# The wire shape of each lake column type (DuckDB's names): integers stay exact int64,
# floating point is double, a book's levels are lists of doubles; anything else (text, the
# `date` partition, a decimal, which stays exact as text) is its text.
_INT64 = frozenset(
    {"BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UINTEGER", "USMALLINT", "UTINYINT"}
)
_DOUBLE = frozenset({"DOUBLE", "FLOAT", "REAL"})
_LISTS = frozenset({f"{t}[]" for t in (*_DOUBLE, *_INT64)})
INT64, DOUBLE, BOOL, DOUBLE_LIST, STRING = (
    "int64_values",
    "double_values",
    "bool_values",
    "double_list_values",
    "string_values",
)


def wire_type(column_type: str) -> str:
    """The HistoryColumn `values` field a lake column of `column_type` is carried in."""
    if column_type in _INT64:
        return INT64
    if column_type in _DOUBLE:
        return DOUBLE
    if column_type == "BOOLEAN":
        return BOOL
    if column_type in _LISTS:
        return DOUBLE_LIST
    return STRING


_ZERO: dict[str, Any] = {INT64: 0, DOUBLE: 0.0, BOOL: False, STRING: ""}


def encode_columns(
    names: Sequence[str], wire_types: Sequence[str], rows: Sequence[Sequence[Any]]
) -> list[marketdata_pb2.HistoryColumn]:
    """`rows` (tuples in the order of `names`) as one HistoryColumn per name."""
    by_column = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    columns = []
    for name, wire, values in zip(names, wire_types, by_column, strict=True):
        column = marketdata_pb2.HistoryColumn(name=name)
        target = getattr(column, wire)
        target.SetInParent()  # an empty page still says which type the column has
        has_nulls = None in values
        if has_nulls:
            column.null_rows.extend(i for i, v in enumerate(values) if v is None)
        if wire == DOUBLE_LIST:
            for value in values:
                target.values.add().values.extend(value or ())
        elif wire == STRING:
            target.values.extend("" if v is None else str(v) for v in values)
        elif has_nulls:
            zero = _ZERO[wire]
            target.values.extend(zero if v is None else v for v in values)
        else:
            target.values.extend(values)
        columns.append(column)
    return columns


def decode_columns(page: marketdata_pb2.HistoryPage) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(column names, rows) of a page: the values as the lake holds them, None for null."""
    names = [c.name for c in page.columns]
    cells: list[list[Any]] = []
    for column in page.columns:
        wire = column.WhichOneof("values")
        if wire is None:
            values: list[Any] = [None] * page.row_count
        elif wire == DOUBLE_LIST:
            values = [list(v.values) for v in column.double_list_values.values]
        else:
            values = list(getattr(column, wire).values)
        if len(values) != page.row_count:
            raise ValueError(
                f"column {column.name} has {len(values)} values for {page.row_count} rows"
            )
        for row in column.null_rows:
            values[row] = None
        cells.append(values)
    return names, list(zip(*cells, strict=True)) if cells else []
