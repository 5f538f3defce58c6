"""What a served update must equal: the signals recomputed here, independently of the stream
job, from the Kafka record with the same sequence (a book update from its `book` record, a
trade-flow update from its `flow` record). The one-machine e2e (tests/e2e) and the cluster e2e
(tests/cluster) make the same check through this module.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from quantcore import events
from quantcore.v1 import signals_pb2


def reference(record: events.BookRecord) -> dict[str, float]:
    """Mid, spread and order book imbalance straight from the definitions in signals.proto."""
    bid, ask = record.bid_px[0], record.ask_px[0]
    ref = {
        "best_bid": bid,
        "best_ask": ask,
        "best_bid_qty": record.bid_qty[0],
        "best_ask_qty": record.ask_qty[0],
        "mid": (bid + ask) / 2,
        "spread": ask - bid,
    }
    for n in (1, 5, 10, 20):
        b, a = sum(record.bid_qty[:n]), sum(record.ask_qty[:n])
        ref[f"obi_{n}"] = (b - a) / (b + a) if b + a else 0.0
    return ref


def flow_reference(record: events.TradeFlowRecord) -> dict[str, float]:
    """Trade-flow imbalance and volume per window, as signals.proto defines them."""
    ref: dict[str, float] = {"window_end_ms": record.as_of_ms}
    for w in (1, 5, 30):
        buy, sell = getattr(record, f"buy_volume_{w}s"), getattr(record, f"sell_volume_{w}s")
        ref[f"volume_{w}s"] = buy + sell
        if buy + sell:
            ref[f"tfi_{w}s"] = (buy - sell) / (buy + sell)
    return ref


def book_records(
    bootstrap: str,
    wanted: set[tuple[str, int]],
    topic: str = events.BOOK_TOPIC,
    timeout: float = 120.0,
    kafka: Mapping[str, Any] | None = None,
) -> dict[tuple[str, int], events.BookRecord]:
    """The records of `topic` whose (symbol, sequence) is in `wanted`, read from the start
    (`kafka`: the client's credentials)."""
    found = _records(bootstrap, wanted, topic, events.BookRecord, timeout, kafka)
    return {k: v for k, v in found.items() if isinstance(v, events.BookRecord)}


def flow_records(
    bootstrap: str,
    wanted: set[tuple[str, int]],
    topic: str = events.FLOW_TOPIC,
    timeout: float = 120.0,
    kafka: Mapping[str, Any] | None = None,
) -> dict[tuple[str, int], events.TradeFlowRecord]:
    found = _records(bootstrap, wanted, topic, events.TradeFlowRecord, timeout, kafka)
    return {k: v for k, v in found.items() if isinstance(v, events.TradeFlowRecord)}


def _records(
    bootstrap: str,
    wanted: set[tuple[str, int]],
    topic: str,
    model: type[events.BookRecord] | type[events.TradeFlowRecord],
    timeout: float,
    kafka: Mapping[str, Any] | None = None,
) -> dict[tuple[str, int], events.BookRecord | events.TradeFlowRecord]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            **(kafka or {}),  # credentials: the broker is SASL_SSL unless insecure
            "bootstrap.servers": bootstrap,
            "group.id": f"e2e-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    found: dict[tuple[str, int], events.BookRecord | events.TradeFlowRecord] = {}
    deadline = time.monotonic() + timeout
    try:
        while not wanted <= set(found) and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None or msg.value() is None:
                continue
            record = model.model_validate_json(msg.value() or b"")
            key = (
                record.symbol,
                record.seq if isinstance(record, events.BookRecord) else record.sequence,
            )
            if key in wanted:
                found[key] = record
    finally:
        consumer.close()
    return found


def assert_served_values_match(
    books: list[signals_pb2.SignalUpdate], bootstrap: str, kafka: Mapping[str, Any] | None = None
) -> None:
    """Every served book update equals the reference computed from its own Kafka record."""
    records = book_records(bootstrap, {(u.symbol, u.sequence) for u in books}, kafka=kafka)
    missing = {(u.symbol, u.sequence) for u in books} - set(records)
    assert not missing, f"updates with no book record of that sequence: {sorted(missing)[:5]}"
    for u in books:
        expected = reference(records[(u.symbol, u.sequence)])
        for name, value in expected.items():
            got = getattr(u.book, name)
            assert got == pytest.approx(value, rel=1e-9, abs=1e-12), (
                f"{u.symbol} seq {u.sequence} {name}: served {got}, reference {value}"
            )


def assert_served_flow_matches(
    flows: list[signals_pb2.SignalUpdate], bootstrap: str, kafka: Mapping[str, Any] | None = None
) -> None:
    """Every served trade-flow update equals the reference computed from its own flow record."""
    records = flow_records(bootstrap, {(u.symbol, u.sequence) for u in flows}, kafka=kafka)
    missing = {(u.symbol, u.sequence) for u in flows} - set(records)
    assert not missing, f"updates with no flow record of that sequence: {sorted(missing)[:5]}"
    for u in flows:
        expected = flow_reference(records[(u.symbol, u.sequence)])
        for name in ("tfi_1s", "tfi_5s", "tfi_30s", "volume_1s", "volume_5s", "volume_30s"):
            got = getattr(u.trades, name)
            if name not in expected:  # an empty window: no ratio (NaN on the wire)
                assert got != got, f"{u.symbol} seq {u.sequence} {name}: {got}, expected NaN"
                continue
            assert got == pytest.approx(expected[name], rel=1e-9, abs=1e-12), (
                f"{u.symbol} seq {u.sequence} {name}: served {got}, reference {expected[name]}"
            )
        assert u.trades.window_end_ms == expected["window_end_ms"]
