"""What a served book update must equal: the signals recomputed here, independently of the
stream job, from the Kafka `book` record with the same exchange sequence. The one-machine e2e
(tests/e2e) and the cluster e2e (tests/cluster) make the same check through this module.
"""

from __future__ import annotations

import time
import uuid

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


def book_records(
    bootstrap: str,
    wanted: set[tuple[str, int]],
    topic: str = events.BOOK_TOPIC,
    timeout: float = 120.0,
) -> dict[tuple[str, int], events.BookRecord]:
    """The records of `topic` whose (symbol, sequence) is in `wanted`, read from the start."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"e2e-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    found: dict[tuple[str, int], events.BookRecord] = {}
    deadline = time.monotonic() + timeout
    try:
        while not wanted <= set(found) and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None or msg.value() is None:
                continue
            record = events.BookRecord.model_validate_json(msg.value() or b"")
            if (record.symbol, record.seq) in wanted:
                found[(record.symbol, record.seq)] = record
    finally:
        consumer.close()
    return found


def assert_served_values_match(books: list[signals_pb2.SignalUpdate], bootstrap: str) -> None:
    """Every served book update equals the reference computed from its own Kafka record."""
    records = book_records(bootstrap, {(u.symbol, u.sequence) for u in books})
    missing = {(u.symbol, u.sequence) for u in books} - set(records)
    assert not missing, f"updates with no book record of that sequence: {sorted(missing)[:5]}"
    for u in books:
        expected = reference(records[(u.symbol, u.sequence)])
        for name, value in expected.items():
            got = getattr(u.book, name)
            assert got == pytest.approx(value, rel=1e-9, abs=1e-12), (
                f"{u.symbol} seq {u.sequence} {name}: served {got}, reference {value}"
            )
