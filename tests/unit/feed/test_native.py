"""The feed's C extensions: built by `make setup`, in use, and equal to their Python twins.

hatch_build.py skips an extension that does not compile (the feed then runs its Python twin,
slower); here a missing one fails, so CI cannot lose them unnoticed. The property tests in
test_book.py and test_codec.py run both twins; this file adds books far larger than theirs.
"""

from __future__ import annotations

import random

import pytest

from quantcore.feed import binance, book


def test_the_compiled_twins_are_built_and_in_use() -> None:
    from quantcore.feed import _depth_diff, _orderbook

    assert book.OrderBook is _orderbook.OrderBook
    assert binance.parse_depth_diff is _depth_diff.parse


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_large_churning_book_reads_the_same_in_both(seed: int) -> None:
    # Thousands of levels grow and shrink the compiled hash tables many times over; deletes
    # of absent prices, re-adds and moves across the sorted window all happen.
    rng = random.Random(seed)
    compiled, reference = (
        book.OrderBook(window=16, min_sorted=4),
        book.PythonOrderBook(window=16, min_sorted=4),
    )
    mid = 60_000.0
    for step in range(3_000):
        if step % 1_000 == 0:
            levels = [(round(mid - i * 0.01, 2), 1.0 + i) for i in range(1, 1_001)]
            asks = [(round(mid + i * 0.01, 2), 1.0 + i) for i in range(1, 1_001)]
            compiled.load(levels, asks)
            reference.load(levels, asks)
            continue
        mid += rng.choice((-0.05, 0.0, 0.05))
        bids = [
            (round(mid - rng.randint(1, 4_000) * 0.01, 2), rng.choice((0.0, 0.5, 2.0)))
            for _ in range(rng.randint(0, 40))
        ]
        asks = [
            (round(mid + rng.randint(1, 4_000) * 0.01, 2), rng.choice((0.0, 0.5, 2.0)))
            for _ in range(rng.randint(0, 40))
        ]
        n = rng.choice((1, 5, 20, 50))
        if step % 7 == 0:  # the per-diff path: update and read the top in one call
            assert compiled.apply(bids, asks, n) == reference.apply(bids, asks, n)
            continue
        compiled.update(bids, asks)
        reference.update(bids, asks)
        assert compiled.top_of_book() == reference.top_of_book()
        assert compiled.crossed() == reference.crossed()
        assert compiled.bids(n) == reference.bids(n)
        assert compiled.asks(n) == reference.asks(n)
        assert compiled.depth() == reference.depth()
    compiled.clear()
    assert compiled.depth() == (0, 0)
    assert compiled.top_of_book() == (None, None, None, None)


def test_the_compiled_book_refuses_what_no_valid_frame_holds() -> None:
    compiled = book.OrderBook()
    with pytest.raises(ValueError, match="positive and finite"):
        compiled.update([(0.0, 1.0)], [])
    with pytest.raises(ValueError, match="positive and finite"):
        compiled.update([], [(float("nan"), 1.0)])
    with pytest.raises(TypeError):
        compiled.update([(1.0,)], [])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        compiled.update([("1.0", "2.0")], [])  # type: ignore[list-item]
