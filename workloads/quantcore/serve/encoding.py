"""What the server writes on a stream: the sink's bytes, plus the server's hop stamps.

Protobuf merges repeated occurrences of an embedded message field, so appending an
encoded `SignalUpdate{hops{server_*}}` to the forwarded bytes sets those two stamps while
keeping every other field as the sink wrote it: no decode on the hot path. A field mask
(client-selected fields) is the one case that decodes and re-encodes.
"""

from __future__ import annotations

from google.protobuf.field_mask_pb2 import FieldMask

from quantcore.v1 import signals_pb2

# Always sent whatever the mask: a client cannot order or age an update without them.
ALWAYS_SENT = ("symbol", "sequence", "event_time_ms", "hops")


def hop_suffix(server_receive_ns: int, server_send_ns: int) -> bytes:
    return signals_pb2.SignalUpdate(
        hops=signals_pb2.Hops(server_receive_ns=server_receive_ns, server_send_ns=server_send_ns)
    ).SerializeToString()


def stamped(payload: bytes, server_receive_ns: int, server_send_ns: int) -> bytes:
    return payload + hop_suffix(server_receive_ns, server_send_ns)


def batch(updates: list[bytes]) -> bytes:
    """An encoded UpdateBatch of already-encoded SignalUpdates (field 1, length-delimited)."""
    out = bytearray()
    for update in updates:
        out += b"\x0a"
        out += _varint(len(update))
        out += update
    return bytes(out)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_mask(paths: list[str]) -> FieldMask | None:
    """A validated mask over SignalUpdate, or None for "everything". Raises ValueError."""
    if not paths:
        return None
    mask = FieldMask(paths=[*ALWAYS_SENT, *paths])
    if not mask.IsValidForDescriptor(signals_pb2.SignalUpdate.DESCRIPTOR):
        raise ValueError(f"unknown field in {paths!r}; paths are within quantcore.v1.SignalUpdate")
    return mask


def masked(payload: bytes, mask: FieldMask) -> bytes:
    full = signals_pb2.SignalUpdate.FromString(payload)
    kept = signals_pb2.SignalUpdate()
    mask.MergeMessage(full, kept)
    kind = full.WhichOneof("body")
    if kind is not None:
        # Keep the kind visible even when the mask selected none of its fields.
        getattr(kept, kind).SetInParent()
    return kept.SerializeToString()
