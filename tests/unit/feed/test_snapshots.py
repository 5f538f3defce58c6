"""The REST weight budget and the retry backoff (pure, with an explicit clock)."""

from __future__ import annotations

import pytest

from quantcore.feed import binance
from quantcore.feed.snapshots import WeightBudget, backoff


def test_requests_are_staggered_and_kept_within_the_weight_per_minute() -> None:
    budget = WeightBudget(600, min_interval=0.1, now=0.0)  # 10 weight a second
    now, spent = 0.0, 0
    while now < 120:
        wait = budget.delay(50, now)
        assert wait >= 0
        now += wait
        budget.spend(50, now)
        spent += 50
        assert budget.delay(50, now) >= 0.1  # never two requests closer than the stagger
    # Over two minutes: the initial burst (a tenth of a minute) plus 600 a minute, no more.
    assert spent <= 60 + 2 * 600 + 50


def test_retry_after_bans_every_request_until_it_expires() -> None:
    budget = WeightBudget(6000, now=0.0)
    budget.ban(30, now=10.0)
    assert budget.delay(5, 11.0) == pytest.approx(29.0)
    assert budget.delay(5, 40.5) == 0


def test_the_servers_used_weight_header_shrinks_our_room() -> None:
    budget = WeightBudget(3000, now=0.0)
    budget.observe_used(5990, binance.REQUEST_WEIGHT_PER_MINUTE, now=0.0)
    assert budget.delay(50, 0.0) > 0.5


def test_backoff_is_capped_jittered_and_immediate_at_first() -> None:
    assert backoff(0) == 0
    for attempts in range(1, 30):
        value = backoff(attempts, base=0.25, cap=30)
        ceiling = min(30, 0.25 * 2 ** (attempts - 1))
        assert ceiling / 2 <= value <= ceiling


def test_depth_weights_follow_the_documented_table() -> None:
    assert [binance.depth_weight(n) for n in (5, 100, 500, 1000, 5000)] == [5, 5, 25, 50, 250]
