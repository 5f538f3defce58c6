"""One output row of a signal query -> the protobuf SignalUpdate the relay stores and publishes.

Rows carry columns named after the message fields (see quantcore.stream.signals), so this
module copies by name from the message descriptors and never lists the signals again.
Spark nulls (an undefined ratio, e.g. imbalance over an empty book side) become NaN.
On the signals topic a row is one JSON object (Spark's `to_json`, which leaves nulls out)
with its `kind` added; `from_record` turns it into what the relay must do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from quantcore.signalstore import Update
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


@dataclass(frozen=True)
class Malformed:
    """An input record the stream job refused, by its Kafka coordinates (counted, skipped)."""

    topic: str
    partition: int
    offset: int


def from_record(value: bytes, *, stream_compute_ns: int, sink_write_ns: int) -> Update | Malformed:
    """Decode one signals-topic record; ValueError when it is not a row the job writes."""
    try:
        row = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(row, dict):
        raise ValueError("not a JSON object")
    try:
        if not row["valid"]:
            return Malformed(str(row["topic"]), int(row["partition"]), int(row["offset"]))
        kind, symbol, sequence = row["kind"], row["symbol"], row["sequence"]
    except KeyError as exc:
        raise ValueError(f"missing field {exc}") from exc
    if not isinstance(symbol, str) or not isinstance(sequence, int):
        raise ValueError("symbol must be a string and sequence an integer")
    try:
        payload = encode(
            kind, row, stream_compute_ns=stream_compute_ns, sink_write_ns=sink_write_ns
        )
        return Update(symbol, kind, sequence, payload)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"cannot encode {kind!r} row: {exc!r}") from exc
