"""The local order book sync procedure, step by step, and a property test against a naive book."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcore.feed.book import BookSync, OrderBook, Outcome, PythonOrderBook, SyncState
from quantcore.feed.messages import DepthDiff, DepthSnapshot, Level


def diff(first: int, final: int, bids: list[Level] = (), asks: list[Level] = ()) -> DepthDiff:  # type: ignore[assignment]
    return DepthDiff("BTCUSDT", first, final, 1_000 + final, 10 * final, list(bids), list(asks))


def snapshot(
    last: int, bids: list[Level] | None = None, asks: list[Level] | None = None
) -> DepthSnapshot:
    return DepthSnapshot(
        "BTCUSDT",
        last,
        0,
        bids if bids is not None else [(100.0, 1.0), (99.0, 2.0)],
        asks if asks is not None else [(101.0, 1.0), (102.0, 2.0)],
    )


def test_diffs_before_the_snapshot_are_buffered_then_dropped_or_applied() -> None:
    sync = BookSync("BTCUSDT")
    assert sync.wants_snapshot
    assert sync.on_diff(diff(1, 5)).outcome is Outcome.BUFFERED
    assert sync.on_diff(diff(6, 9, bids=[(100.5, 3.0)])).outcome is Outcome.BUFFERED
    assert sync.on_diff(diff(10, 12, asks=[(101.0, 0.0)])).outcome is Outcome.BUFFERED
    step = sync.on_snapshot(snapshot(7))
    # 1..5 is covered by the snapshot (dropped); 6..9 straddles 8 (applied); 10..12 follows.
    assert sync.counters.dropped == 1
    assert sync.counters.applied == 2
    assert [u.diff.final_id for u in step.updates] == [9, 12]
    assert step.updates[0].prev_top is None  # first record after a sync
    assert step.updates[1].prev_top == (100.5, 3.0, 101.0, 1.0)
    assert step.updates[1].ask_px == [102.0]
    assert sync.state is SyncState.LIVE
    assert sync.last_update_id == 12
    assert not sync.wants_snapshot


def test_gap_resyncs_and_keeps_the_diff_that_revealed_it() -> None:
    sync = BookSync("BTCUSDT")
    sync.on_snapshot(snapshot(10))
    assert sync.on_diff(diff(11, 12)).outcome is Outcome.APPLIED
    assert sync.on_diff(diff(14, 15)).outcome is Outcome.GAP
    assert sync.wants_snapshot
    assert sync.counters.gaps == 1
    assert sync.book.depth() == (0, 0)  # nothing stale is served while resyncing
    sync.on_snapshot(snapshot(14))
    assert sync.state is SyncState.LIVE
    assert sync.last_update_id == 15


def test_duplicates_are_dropped_without_a_resync() -> None:
    sync = BookSync("BTCUSDT")
    sync.on_snapshot(snapshot(10))
    sync.on_diff(diff(11, 12))
    assert sync.on_diff(diff(11, 12)).outcome is Outcome.DROPPED
    assert sync.on_diff(diff(13, 13)).outcome is Outcome.APPLIED
    assert sync.counters.gaps == 0


def test_a_snapshot_older_than_the_buffer_is_refused() -> None:
    sync = BookSync("BTCUSDT")
    sync.on_diff(diff(20, 25))
    assert sync.on_snapshot(snapshot(10)).outcome is Outcome.SNAPSHOT_STALE
    assert sync.wants_snapshot
    sync.on_snapshot(snapshot(22))
    assert sync.state is SyncState.LIVE
    assert sync.last_update_id == 25


def test_a_snapshot_with_no_buffered_diff_waits_for_the_straddling_one() -> None:
    sync = BookSync("BTCUSDT")
    sync.on_snapshot(snapshot(10))
    assert sync.state is SyncState.SYNCING
    assert sync.on_diff(diff(5, 10)).outcome is Outcome.DROPPED
    assert sync.on_diff(diff(13, 14)).outcome is Outcome.SNAPSHOT_STALE  # 11..12 were missed
    assert sync.wants_snapshot


def test_a_crossed_book_resyncs_and_emits_nothing() -> None:
    sync = BookSync("BTCUSDT")
    sync.on_snapshot(snapshot(10))
    step = sync.on_diff(diff(11, 11, bids=[(101.5, 1.0)]))
    assert step.outcome is Outcome.CROSSED
    assert step.updates == ()
    assert sync.wants_snapshot
    assert sync.counters.crossed == 1
    assert sync.on_snapshot(snapshot(5, bids=[(103.0, 1.0)])).outcome is Outcome.CROSSED


def test_the_buffer_is_bounded() -> None:
    sync = BookSync("BTCUSDT", max_buffer=3)
    for i in range(10):
        sync.on_diff(diff(i * 2 + 1, i * 2 + 2))
    assert sync.counters.buffer_overflows == 7
    # The three newest remain: a snapshot older than them is stale, a covering one syncs.
    assert sync.on_snapshot(snapshot(10)).outcome is Outcome.SNAPSHOT_STALE
    sync.on_snapshot(snapshot(16))
    assert sync.last_update_id == 20


def test_attempts_count_failures_and_reset_once_live() -> None:
    sync = BookSync("BTCUSDT")
    sync.on_diff(diff(20, 25))
    sync.on_snapshot(snapshot(1))
    sync.on_snapshot(snapshot(2))
    assert sync.attempts == 2
    sync.on_snapshot(snapshot(21))
    assert sync.attempts == 0


prices = st.integers(min_value=1, max_value=60).map(float)
side = st.lists(st.tuples(prices, st.sampled_from([0.0, 1.0, 2.5])), max_size=8)


# The compiled book (when built) and its Python reference, each held to the naive model.
BOOKS = sorted({OrderBook, PythonOrderBook}, key=lambda cls: cls.__module__)


@pytest.mark.parametrize("implementation", BOOKS, ids=lambda cls: cls.__module__)
@pytest.mark.parametrize(
    "window",
    [
        {},  # the default: these small books stay wholly sorted
        {"window": 3, "min_sorted": 2},  # trimmed and refilled all the time
        {"window": 1, "min_sorted": 1},
    ],
)
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(side, side), max_size=30), st.integers(min_value=1, max_value=25))
def test_order_book_matches_a_naive_model(
    implementation: type[PythonOrderBook],
    window: dict[str, int],
    updates: list[tuple[list[Level], list[Level]]],
    n: int,
) -> None:
    book = implementation(**window)
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for i, (b, a) in enumerate(updates):
        # Every other update through `apply`, the per-diff path (update + top n, or None).
        top_n = book.apply(b, a, n) if i % 2 else None
        if not i % 2:
            book.update(b, a)
        for model, levels in ((bids, b), (asks, a)):
            for p, q in levels:
                if q == 0.0:
                    model.pop(p, None)
                else:
                    model[p] = q
        want_bids = sorted(bids.items(), reverse=True)[:n]
        want_asks = sorted(asks.items())[:n]
        top = (*(want_bids[0] if bids else (None, None)), *(want_asks[0] if asks else (None, None)))
        crossed = bool(bids and asks and want_bids[0][0] >= want_asks[0][0])
        if i % 2:
            assert top_n == (None if crossed else _columns(want_bids) + _columns(want_asks))
        else:
            assert book.top_of_book() == top  # read before bids(n), which may sort more levels
        assert book.crossed() == crossed
        bp, bq = book.bids(n)
        ap, aq = book.asks(n)
        assert list(zip(bp, bq, strict=False)) == want_bids
        assert list(zip(ap, aq, strict=False)) == want_asks
        assert book.depth() == (len(bids), len(asks))


def _columns(levels: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    return [p for p, _ in levels], [q for _, q in levels]
