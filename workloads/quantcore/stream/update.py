"""One output row of a signal query -> the protobuf SignalUpdate the sink stores and publishes.

Rows carry columns named after the message fields (see quantcore.stream.signals), so this
module copies by name from the message descriptors and never lists the signals again.
Spark nulls (an undefined ratio, e.g. imbalance over an empty book side) become NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from quantcore.v1 import signals_pb2

_HOPS_FROM_ROW = ("exchange_event_ns", "feed_receive_ns", "feed_publish_ns", "kafka_append_ns")


def _fill(message: Message, row: Mapping[str, Any]) -> None:
    for field in message.DESCRIPTOR.fields:
        value = row.get(field.name)
        if field.type == FieldDescriptor.TYPE_DOUBLE:
            setattr(message, field.name, math.nan if value is None else float(value))
        elif value is not None:
            setattr(message, field.name, value)


def encode(
    kind: str, row: Mapping[str, Any], *, stream_compute_ns: int, sink_write_ns: int
) -> bytes:
    """Serialize the update for one row of kind "book" or "trades"."""
    update = signals_pb2.SignalUpdate(
        symbol=row["symbol"], sequence=row["sequence"], event_time_ms=row["event_time_ms"]
    )
    for name in _HOPS_FROM_ROW:
        value = row.get(name)
        if value is not None:
            setattr(update.hops, name, value)
    update.hops.stream_compute_ns = stream_compute_ns
    update.hops.sink_write_ns = sink_write_ns
    if kind == "book":
        _fill(update.book, row)
    elif kind == "trades":
        _fill(update.trades, row)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return update.SerializeToString()
