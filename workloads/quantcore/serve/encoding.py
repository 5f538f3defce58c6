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


# Wire tags: SignalUpdate.hops (field 4, length-delimited), Hops.server_receive_ns (7) and
# Hops.server_send_ns (8) as varints, UpdateBatch.updates (field 1, length-delimited).
_HOPS_TAG = b"\x22"
_RECEIVE_TAG = b"\x38"
_SEND_TAG = b"\x40"
_UPDATE_TAG = b"\x0a"


def hop_suffix(server_receive_ns: int, server_send_ns: int) -> bytes:
    """An encoded SignalUpdate{hops{server_receive_ns, server_send_ns}}, built by hand: this
    runs once per update per client, where a message object would cost several times more."""
    hops = _RECEIVE_TAG + _varint(server_receive_ns) + _SEND_TAG + _varint(server_send_ns)
    return _HOPS_TAG + _varint(len(hops)) + hops


def stamped(payload: bytes, server_receive_ns: int, server_send_ns: int) -> bytes:
    return payload + hop_suffix(server_receive_ns, server_send_ns)


def receive_stamp(server_receive_ns: int) -> bytes:
    """The encoded Hops.server_receive_ns field: built once per update, shared by every client."""
    return _RECEIVE_TAG + _varint(server_receive_ns)


def stamped_batch(updates: list[tuple[bytes, bytes]], server_send_ns: int) -> bytes:
    """An encoded UpdateBatch of (payload, receive_stamp) pairs, all sent at one time."""
    send = _SEND_TAG + _varint(server_send_ns)
    out = bytearray()
    for payload, receive in updates:
        hops = receive + send  # at most 22 bytes: its length is one varint byte
        size = len(payload) + len(hops) + 2
        out += _UPDATE_TAG
        out += _varint(size)
        out += payload
        out += _HOPS_TAG
        out.append(len(hops))
        out += hops
    return bytes(out)


def batch(updates: list[bytes]) -> bytes:
    """An encoded UpdateBatch of already-encoded SignalUpdates."""
    out = bytearray()
    for update in updates:
        out += _UPDATE_TAG
        out += _varint(len(update))
        out += update
    return bytes(out)


def _varint(value: int) -> bytes:
    # Non-negative values only: every stamped field is a nanosecond time or a length.
    if value < 0x80:
        return bytes((value,))
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
