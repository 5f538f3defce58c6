"""The hand-built wire encoding of stamped batches decodes as the protobuf messages it claims."""

from __future__ import annotations

import pytest

from quantcore.serve import encoding
from quantcore.v1 import marketdata_pb2, signals_pb2


def sink_update(symbol: str, sequence: int, mid: float) -> bytes:
    update = signals_pb2.SignalUpdate(
        symbol=symbol, sequence=sequence, hops=signals_pb2.Hops(sink_write_ns=1_700_000_000_000)
    )
    update.book.mid = mid
    return update.SerializeToString()


@pytest.mark.parametrize("receive_ns", [0, 1, 127, 128, 300, 1_763_900_000_123_456_789, 2**62])
def test_hop_suffix_decodes_as_the_hops(receive_ns: int) -> None:
    decoded = signals_pb2.SignalUpdate.FromString(encoding.hop_suffix(receive_ns, receive_ns + 5))
    assert decoded == signals_pb2.SignalUpdate(
        hops=signals_pb2.Hops(server_receive_ns=receive_ns, server_send_ns=receive_ns + 5)
    )


def test_stamped_batch_keeps_sink_fields_and_sets_server_hops() -> None:
    # A payload past 127 bytes needs a two-byte length prefix.
    payloads = [sink_update("BTCUSDT", 7, 60_000.5), sink_update("X" * 200, 8, 1.0)]
    receives = [1_763_900_000_000_000_001, 42]
    send_ns = 1_763_900_000_000_900_000
    pairs = [(p, encoding.receive_stamp(r)) for p, r in zip(payloads, receives, strict=True)]
    wire = encoding.stamped_batch(pairs, send_ns)
    decoded = marketdata_pb2.UpdateBatch.FromString(wire).updates
    assert [(u.symbol, u.sequence, u.book.mid) for u in decoded] == [
        ("BTCUSDT", 7, 60_000.5),
        ("X" * 200, 8, 1.0),
    ]
    for update, receive_ns in zip(decoded, receives, strict=True):
        assert update.hops.sink_write_ns == 1_700_000_000_000
        assert update.hops.server_receive_ns == receive_ns
        assert update.hops.server_send_ns == send_ns
    # The same bytes as stamping each update and framing the batch separately.
    assert wire == encoding.batch(
        [encoding.stamped(p, r, send_ns) for p, r in zip(payloads, receives, strict=True)]
    )
