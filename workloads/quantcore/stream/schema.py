"""Spark schemas of the Kafka topics, derived from the pydantic records in quantcore.events.

The records are the one definition of the wire format; this module only translates their
field annotations, so a field added there reaches the stream job without a second edit here.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
)

_SCALARS: dict[Any, DataType] = {
    str: StringType(),
    int: LongType(),  # exchange ids and ns timestamps exceed 32 bits
    float: DoubleType(),
    bool: BooleanType(),
}


def _spark_type(annotation: Any) -> tuple[DataType, bool]:
    """(Spark type, nullable) of one field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported union {annotation!r}")
        return _spark_type(args[0])[0], True
    if origin is list:
        (item,) = typing.get_args(annotation)
        return ArrayType(_spark_type(item)[0], containsNull=False), False
    if annotation in _SCALARS:
        return _SCALARS[annotation], False
    raise TypeError(f"no Spark type for {annotation!r}")


def spark_schema(model: type[BaseModel]) -> StructType:
    fields = []
    for name, info in model.model_fields.items():
        dtype, nullable = _spark_type(info.annotation)
        fields.append(StructField(name, dtype, nullable))
    return StructType(fields)


def required_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """Fields a record must carry (not Optional): a parsed row missing one is malformed."""
    return tuple(
        name for name, info in model.model_fields.items() if not _spark_type(info.annotation)[1]
    )
