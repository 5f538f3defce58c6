"""A looped replay moves exchange times on with every loop, as it does ids: each loop's event and
trade times ("E", "T") come after the previous loop's, by the same deterministic period."""

from __future__ import annotations

import re

import orjson
import pytest

from quantcore.feed.recording import merged
from quantcore.feed.replay import LOOP_ID_OFFSET, Replay, loop_period_ms
from quantcore.localmode.source import default_recordings_dir

RECORDINGS = sorted(default_recordings_dir().glob("*.gz"))
TIME = re.compile(rb'"[ET]":(\d+)')


@pytest.fixture(scope="module")
def replay() -> Replay:
    return Replay(RECORDINGS, loop=True)


def _times(frame: bytes) -> list[int]:
    return [int(t) for t in TIME.findall(frame)]


def test_every_loop_shifts_times_past_the_previous_loop(replay: Replay) -> None:
    period = replay.loop_period_ms
    lines = replay.lines
    all_times = [t for line in lines for t in _times(line.frame)]
    assert period > max(all_times) - min(all_times)
    trade = next(i for i, line in enumerate(lines) if b"@trade" in line.frame[:48])
    depth = next(i for i, line in enumerate(lines) if b"@depth" in line.frame[:48])
    for i in (trade, depth):
        original = orjson.loads(lines[i].frame)["data"]
        for loop in (1, 2, 5):
            shifted = orjson.loads(replay._shift(i, loop * LOOP_ID_OFFSET, loop * period))["data"]
            assert shifted["E"] == original["E"] + loop * period
            if "T" in original:  # a trade: its time and id
                assert shifted["T"] == original["T"] + loop * period
                assert shifted["t"] == original["t"] + loop * LOOP_ID_OFFSET
            else:
                assert shifted["u"] == original["u"] + loop * LOOP_ID_OFFSET
                assert shifted["U"] == original["U"] + loop * LOOP_ID_OFFSET
            # Nothing else changes.
            assert {k: v for k, v in shifted.items() if k not in "ETtUu"} == {
                k: v for k, v in original.items() if k not in "ETtUu"
            }
    # The last time of loop k is before the first of loop k + 1.
    assert max(all_times) < min(all_times) + period


def test_the_period_is_deterministic_and_keeps_pace_with_the_recording() -> None:
    lines = list(merged(*RECORDINGS))
    assert loop_period_ms(lines) == loop_period_ms(list(merged(*RECORDINGS)))
    received_ms = (lines[-1].recv_ns - lines[0].recv_ns) / 1e6
    assert received_ms <= loop_period_ms(lines) <= received_ms + 1_000


def test_copies_loop_with_the_recordings_period() -> None:
    copies = Replay(RECORDINGS, loop=True, symbols=4)
    assert copies.loop_period_ms == loop_period_ms(list(merged(*RECORDINGS)))
