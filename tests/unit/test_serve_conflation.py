"""The serving tier's pure parts: the conflating queue, request validation, wire encoding."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantcore.client.board import Board
from quantcore.serve import encoding
from quantcore.serve.conflation import ConflatingQueue, QueueClosed, Update
from quantcore.serve.server import RequestError, selection
from quantcore.v1 import signals_pb2


def upd(symbol: str, seq: int, kind: str = "book") -> Update:
    return Update(symbol, kind, seq, f"{symbol}:{kind}:{seq}".encode(), 0)


async def drain(q: ConflatingQueue) -> list[Update]:
    out = []
    while len(q):
        out.append(await q.get())
    return out


async def test_latest_value_per_key_in_first_arrival_order() -> None:
    q = ConflatingQueue()
    for u in (upd("A", 1), upd("B", 1), upd("A", 2), upd("A", 3), upd("A", 1, "trades")):
        q.offer(u)
    got = await drain(q)
    assert [(u.symbol, u.kind, u.sequence) for u in got] == [
        ("A", "book", 3),
        ("B", "book", 1),
        ("A", "trades", 1),
    ]
    assert q.conflated == 2


async def test_sequence_never_goes_back_nor_repeats_across_deliveries() -> None:
    q = ConflatingQueue()
    q.offer(upd("A", 5))
    assert (await q.get()).sequence == 5
    # The seam: the snapshot and the live stream both hold 5; an older 4 arrives late.
    assert not q.offer(upd("A", 5))
    assert not q.offer(upd("A", 4))
    assert len(q) == 0
    assert q.stale == 2
    assert q.offer(upd("A", 6))


@given(st.lists(st.tuples(st.sampled_from("ABC"), st.integers(0, 50)), max_size=200))
def test_any_offer_order_yields_increasing_sequences_bounded_by_keys(
    offers: list[tuple[str, int]],
) -> None:
    async def run() -> None:
        q = ConflatingQueue()
        delivered: dict[str, list[int]] = {}
        for i, (symbol, seq) in enumerate(offers):
            q.offer(upd(symbol, seq))
            assert len(q) <= 3  # never more than one pending value per key
            if i % 3 == 0 and len(q):
                u = await q.get()
                delivered.setdefault(u.symbol, []).append(u.sequence)
        for u in await drain(q):
            delivered.setdefault(u.symbol, []).append(u.sequence)
        for symbol, seqs in delivered.items():
            assert seqs == sorted(set(seqs))
            assert seqs[-1] == max(s for sym, s in offers if sym == symbol)

    asyncio.run(run())


async def test_min_interval_holds_a_key_back_and_keeps_its_latest() -> None:
    q = ConflatingQueue(min_interval_ns=200_000_000)
    q.offer(upd("A", 1))
    assert (await q.get()).sequence == 1
    q.offer(upd("A", 2))
    q.offer(upd("A", 3))
    q.offer(upd("B", 1))
    # B is due at once; A only after its interval, and then with its latest value.
    assert (await q.get()).symbol == "B"
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    assert (await asyncio.wait_for(waiter, 2)).sequence == 3


async def test_close_wakes_a_waiting_reader() -> None:
    q = ConflatingQueue()
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.close("server shutting down")
    with pytest.raises(QueueClosed, match="shutting down"):
        await waiter


def test_selection_normalizes_and_refuses_bad_input() -> None:
    assert selection(["btcusdt", " ETHUSDT"], [], 10) == (
        frozenset({"BTCUSDT", "ETHUSDT"}),
        frozenset({"book", "trades"}),
    )
    assert selection([], ["book"], 10) == (None, frozenset({"book"}))
    with pytest.raises(RequestError, match="not exchange symbols"):
        selection(["BTC/USDT"], [], 10)
    with pytest.raises(RequestError, match="limit is 1"):
        selection(["A", "B"], [], 1)
    with pytest.raises(RequestError, match="unknown kinds"):
        selection(["A"], ["candles"], 10)


def test_stamps_are_appended_without_touching_the_sink_fields() -> None:
    sent = signals_pb2.SignalUpdate(
        symbol="BTCUSDT",
        sequence=9,
        hops=signals_pb2.Hops(feed_receive_ns=1, sink_write_ns=2),
        book=signals_pb2.BookSignals(mid=3.0, obi_5=0.25),
    )
    got = signals_pb2.SignalUpdate.FromString(encoding.stamped(sent.SerializeToString(), 10, 11))
    expected = signals_pb2.SignalUpdate()
    expected.CopyFrom(sent)
    expected.hops.server_receive_ns = 10
    expected.hops.server_send_ns = 11
    assert got == expected


def test_field_mask_keeps_identity_and_the_kind() -> None:
    sent = signals_pb2.SignalUpdate(
        symbol="X", sequence=1, trades=signals_pb2.TradeFlow(tfi_1s=0.5, tfi_5s=0.1)
    )
    mask = encoding.field_mask(["trades.tfi_5s", "book.mid"])
    assert mask is not None
    got = signals_pb2.SignalUpdate.FromString(encoding.masked(sent.SerializeToString(), mask))
    assert (got.symbol, got.sequence, got.WhichOneof("body")) == ("X", 1, "trades")
    assert got.trades.tfi_5s == 0.1
    assert got.trades.tfi_1s == 0.0
    assert encoding.field_mask([]) is None
    with pytest.raises(ValueError, match="unknown field"):
        encoding.field_mask(["book.nope"])


def test_board_shows_the_latest_values_per_symbol() -> None:
    board = Board()
    board.apply(
        signals_pb2.SignalUpdate(
            symbol="ETHUSDT",
            sequence=7,
            hops=signals_pb2.Hops(feed_receive_ns=1_000_000_000),
            book=signals_pb2.BookSignals(mid=2600.25, spread=0.01, obi_5=-0.5),
        ),
        received_ns=1_020_000_000,
    )
    lines = board.render(now_ns=3_020_000_000, status="live")
    assert lines[0].split()[:3] == ["symbol", "mid", "spread"]
    row = lines[1].split()
    assert row[0] == "ETHUSDT"
    assert row[1] == "2600.25"
    assert row[5] == "-0.50"  # obi5
    assert row[-3:] == ["7", "2.0s", "20"]  # book seq, age, feed -> client lag in ms
    assert lines[-1] == "live"
