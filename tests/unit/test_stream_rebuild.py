"""Which rows a rebuild of Redis's state writes, and the consumer it reads them with."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from quantcore.kafkaacl import relay_group
from quantcore.signalstore import Update
from quantcore.stream.rebuild import newest
from quantcore.stream.relay import RelayConfig, consumer_conf, rebuild_conf


def _update(symbol: str, kind: str, sequence: int, tag: str = "") -> Update:
    return Update(symbol, kind, sequence, f"{symbol}/{kind}/{sequence}{tag}".encode())


def test_newest_keeps_the_highest_sequence_per_symbol_and_kind() -> None:
    kept = newest(
        [
            _update("A", "book", 3),
            _update("A", "book", 5),
            _update("A", "book", 4),  # older, after the newest: not kept
            _update("A", "trades", 2),
            _update("B", "book", 1),
        ]
    )
    assert {key: u.sequence for key, u in kept.items()} == {
        ("A", "book"): 5,
        ("A", "trades"): 2,
        ("B", "book"): 1,
    }


def test_newest_merges_into_what_it_kept_and_a_repeat_replaces() -> None:
    kept = newest([_update("A", "book", 5, "first")])
    newest([_update("A", "book", 5, "again"), _update("A", "book", 1)], kept)
    assert kept[("A", "book")].payload == b"A/book/5again"


@given(
    st.lists(
        st.tuples(st.sampled_from("XYZ"), st.sampled_from(("book", "trades")), st.integers(0, 50))
    )
)
def test_newest_is_the_maximum_however_the_log_is_split(rows: list[tuple[str, str, int]]) -> None:
    updates = [_update(*row) for row in rows]
    whole = newest(updates)
    half = len(updates) // 2
    assert newest(updates[half:], newest(updates[:half])).keys() == whole.keys()
    for (symbol, kind), update in whole.items():
        assert update.sequence == max(q for s, k, q in rows if (s, k) == (symbol, kind))


def test_a_rebuild_reads_as_the_relay_without_joining_its_group_or_committing() -> None:
    config = RelayConfig("k:9092", "rediss://r/0", "feed.signals")
    conf = rebuild_conf(config)
    assert conf["group.id"] == relay_group("feed.signals") == consumer_conf(config)["group.id"]
    assert conf["enable.auto.commit"] is False
    assert "group.instance.id" not in conf  # the relay's static member stays the only one
