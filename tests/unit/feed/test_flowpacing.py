"""The trade-flow pacer: one item per key per gap, the newest released when the gap ends."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from quantcore.feed.flowpacing import Pacer


def test_first_goes_out_later_ones_replace_each_other_until_the_gap_ends() -> None:
    pacer: Pacer[int] = Pacer(min_gap_ns=10)
    assert pacer.offer("A", 1, now_ns=100) == 1
    assert pacer.offer("A", 2, now_ns=103) is None
    assert pacer.offer("B", 7, now_ns=104) == 7  # keys are independent
    assert pacer.offer("A", 3, now_ns=105) is None
    assert pacer.next_release_ns() == 110
    assert pacer.due(109) == []
    assert pacer.due(110) == [3]
    assert pacer.next_release_ns() is None
    assert pacer.offer("A", 4, now_ns=115) is None  # 5 ns after the release: held again
    assert pacer.offer("A", 5, now_ns=121) == 5  # a newer item sent at once drops the held one
    assert pacer.due(1_000) == []


def test_forget_drops_a_key() -> None:
    pacer: Pacer[int] = Pacer(min_gap_ns=10)
    pacer.offer("A", 1, 0)
    pacer.offer("A", 2, 1)
    pacer.forget("A")
    assert pacer.due(100) == []
    assert pacer.offer("A", 3, 2) == 3


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.booleans()), min_size=1, max_size=200))
def test_paced_output_keeps_order_spacing_and_always_ends_with_the_newest(
    steps: list[tuple[int, bool]],
) -> None:
    """Whatever the arrival times: sent items are increasing, at least a gap apart, and once
    everything held is released the last sent is the last offered."""
    gap = 10
    pacer: Pacer[int] = Pacer(min_gap_ns=gap)
    now = 0
    sent: list[tuple[int, int]] = []  # (time, item)
    for item, (advance, release_first) in enumerate(steps):
        now += advance
        if release_first:
            sent += [(now, x) for x in pacer.due(now)]
        if pacer.offer("A", item, now) is not None:
            sent.append((now, item))
    release = pacer.next_release_ns()
    if release is not None:
        sent += [(release, x) for x in pacer.due(release)]
    items = [x for _, x in sent]
    assert items == sorted(set(items))
    assert all(b[0] - a[0] >= gap for a, b in itertools.pairwise(sent))
    assert items[-1] == len(steps) - 1
