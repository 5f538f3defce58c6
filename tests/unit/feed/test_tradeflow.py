"""quantcore.feed.tradeflow against a brute-force twin written from its definitions: every record
(trades and decay ticks, their values, sequences and times) must be exactly the same."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from quantcore.feed.tradeflow import (
    LONGEST_MS,
    TICK_MS,
    ExchangeClock,
    Flow,
    SymbolFlow,
    TradeFlows,
)

WINDOWS = (1_000, 5_000, 30_000)
UNITS = 10**8


@dataclass
class BruteForce:
    """Recomputes every window from all accepted trades for each record."""

    trades: list[tuple[int, int, int, bool]] = field(default_factory=list)  # id, time, units, maker
    as_of: int | None = None
    ticks: int = 0

    def _record(self, tick: bool) -> tuple:
        assert self.as_of is not None
        a = self.as_of
        buy = tuple(
            sum(u for _, t, u, m in self.trades if a - w < t <= a and not m) / UNITS
            for w in WINDOWS
        )
        sell = tuple(
            sum(u for _, t, u, m in self.trades if a - w < t <= a and m) / UNITS for w in WINDOWS
        )
        last = max(i for i, *_ in self.trades)
        return (last * 1024 + self.ticks, a, last, buy, sell, tick)

    def trade(self, trade_id: int, time_ms: int, units: int, maker: bool) -> tuple | None:
        if self.trades and trade_id <= max(i for i, *_ in self.trades):
            return None
        self.trades.append((trade_id, time_ms, units, maker))
        self.as_of = time_ms if self.as_of is None else max(self.as_of, time_ms)
        self.ticks = 0
        return self._record(False)

    def clock(self, now_ms: int) -> list[tuple]:
        out: list[tuple] = []
        if self.as_of is None:
            return out
        g = (self.as_of // TICK_MS + 1) * TICK_MS
        while g <= now_ms:
            left = any(self.as_of < t + w <= g for _, t, _, _ in self.trades for w in WINDOWS)
            if left:
                self.as_of = g
                self.ticks += 1
                out.append(self._record(True))
            g += TICK_MS
        return out


def _key(flow: Flow) -> tuple:
    return (flow.sequence, flow.as_of_ms, flow.last_trade_id, flow.buy, flow.sell, flow.tick)


# Times on a coarse grid make window edges (t + W == a grid point or a trade time) common.
_trade = st.tuples(
    st.just("trade"),
    st.integers(-3, 6),  # id step: <= 0 repeats or goes back (a connection overlap)
    st.integers(-10, 40).map(lambda k: k * 50),  # time step, sometimes back in time
    st.integers(0, 5 * UNITS),  # quantity in units of 1e-8 (0 included)
    st.booleans(),
)
_burst = st.tuples(st.just("burst"), st.integers(2, 8), st.integers(1, UNITS), st.booleans())
_clock = st.tuples(st.just("clock"), st.integers(0, 40_000))
_events = st.lists(st.one_of(_trade, _trade, _burst, _clock), max_size=60)


@settings(max_examples=300, deadline=None)
@given(_events, st.integers(0, 10**6).map(lambda k: k * 7))
def test_records_equal_the_brute_force(events, start_ms):
    flow, brute = SymbolFlow("S"), BruteForce()
    trade_id, time_ms, now = 1_000, start_ms, start_ms
    got: list[tuple] = []
    want: list[tuple] = []

    def trade(tid: int, t: int, units: int, maker: bool) -> None:
        record = flow.on_trade(tid, t, units / UNITS, maker)
        got.extend([] if record is None else [_key(record)])
        expected = brute.trade(tid, t, units, maker)
        want.extend([] if expected is None else [expected])

    for event in events:
        if event[0] == "trade":
            _, step, dt, units, maker = event
            trade_id, time_ms = trade_id + step, max(0, time_ms + dt)
            trade(trade_id, time_ms, units, maker)
        elif event[0] == "burst":  # several trades in the same millisecond
            _, n, units, maker = event
            for _ in range(n):
                trade_id += 1
                trade(trade_id, time_ms, units, maker)
        else:
            now = max(now, time_ms) + event[1]
            while (g := flow.next_tick()) is not None and g <= now:
                got.append(_key(flow.tick(g)))
            want.extend(brute.clock(now))
    assert got == want
    sequences = [r[0] for r in got]
    assert sequences == sorted(set(sequences)), "sequences must increase strictly"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 3_000), min_size=1, max_size=30), st.booleans())
def test_windows_decay_to_zero_within_the_longest_window(gaps, maker):
    """After the last trade, ticks run out within LONGEST_MS and the last one is all zeros."""
    flow = SymbolFlow("S")
    t = 0
    for i, gap in enumerate(gaps):
        t += gap
        flow.on_trade(i + 1, t, 0.1, maker)
    ticks = []
    while (g := flow.next_tick()) is not None:
        ticks.append(flow.tick(g))
    assert ticks, "a trade always leaves its windows"
    # The last tick is the first grid point at or after the last trade's exit.
    assert t + LONGEST_MS <= ticks[-1].as_of_ms < t + LONGEST_MS + TICK_MS
    assert ticks[-1].buy == ticks[-1].sell == (0.0, 0.0, 0.0)
    assert len(ticks) <= LONGEST_MS // TICK_MS + 1
    assert all(0 < r.sequence - len(gaps) * 1024 <= len(ticks) for r in ticks)


def test_a_symbol_without_trades_emits_nothing():
    flows = TradeFlows()
    flows.add("QUIET")
    flows.seen("QUIET", 1_000)
    assert flows.due(10**9) == []
    assert flows.next_due is None
    assert flows.warm("QUIET", 1_000 + LONGEST_MS)
    assert not flows.warm("QUIET", 999 + LONGEST_MS)


def test_records_are_held_back_until_every_window_is_covered():
    flows = TradeFlows()
    flows.add("S")
    flows.seen("S", 10_000)  # the first event after subscribing
    assert flows.on_trade("S", 1, 12_000, 1.0, False) is None  # windows not yet exact
    assert flows.due(39_900) == []  # ticks before coverage are held back too
    late = flows.on_trade("S", 2, 40_000, 2.0, True)
    assert late is not None
    assert late.as_of_ms == 40_000
    # The first trade (12 s) is inside the 30 s window as of 40 s: counted, exactly.
    assert late.buy == (0.0, 0.0, 1.0)
    assert late.sell == (2.0, 2.0, 2.0)
    assert late.sequence == 2 * 1024
    # A duplicate changes nothing; ticks come on the grid and end in zeros.
    assert flows.on_trade("S", 2, 40_000, 2.0, True) is None
    ticks = flows.due(10**6)
    assert [r.as_of_ms for r in ticks] == [41_000, 42_000, 45_000, 70_000]
    assert ticks[-1].buy == ticks[-1].sell == (0.0, 0.0, 0.0)
    assert [r.sequence for r in ticks] == [2 * 1024 + k for k in (1, 2, 3, 4)]


def test_a_restart_warms_up_again_and_keeps_refusing_old_ids():
    flows = TradeFlows()
    flows.add("S")
    flows.seen("S", 0)
    assert flows.on_trade("S", 5, 31_000, 1.0, False) is not None
    flows.restart("S")
    assert flows.on_trade("S", 5, 31_000, 1.0, False) is None  # seen before the restart
    assert flows.on_trade("S", 6, 32_000, 1.0, False) is None  # cold again: held back
    assert not flows.warm("S", 61_999)
    assert flows.warm("S", 62_000)


def test_exchange_clock_runs_on_from_the_latest_event_and_never_goes_back():
    clock = ExchangeClock()
    assert clock.now_ms(0) is None
    clock.observe(1_000, 0)
    assert clock.now_ms(250_000_000) == 1_250
    clock.observe(900, 300_000_000)  # older than the latest: ignored
    assert clock.now_ms(300_000_000) == 1_300
    clock.observe(1_200, 400_000_000)  # newer, but behind the running clock: it holds
    assert clock.now_ms(400_000_000) == 1_300
    assert clock.now_ms(500_000_000) == 1_300
    assert clock.now_ms(700_000_000) == 1_500


def test_a_restart_announces_exact_windows_once_warm_even_without_a_trade():
    """After a reconnect the value published before it must not stay for ever: once warm
    again, one record as of the warm-up's end goes out (zeros here), above every sequence."""
    flows = TradeFlows()
    flows.add("S")
    flows.seen("S", 0)
    before = [flows.on_trade("S", 5, 31_000, 1.0, False)]
    before += flows.due(31_250)  # a decay tick or two
    assert before[-1] is not None
    flows.restart("S")
    flows.seen("S", 40_000)  # the first event after the reconnect
    assert flows.due(69_999) == []
    assert flows.next_due == 70_000
    (announced,) = flows.due(70_000)
    assert announced.as_of_ms == 70_000
    assert announced.tick
    assert announced.buy == announced.sell == (0.0, 0.0, 0.0)
    assert announced.sequence > max(r.sequence for r in before if r is not None)
    assert flows.due(10**6) == []  # made once


def test_the_announcement_carries_the_trades_of_the_warm_up_exactly():
    flows = TradeFlows()
    flows.add("S")
    flows.seen("S", 0)
    assert flows.on_trade("S", 1, 10_000, 2.0, True) is None  # not yet warm: held back
    (announced,) = flows.due(30_000)
    assert (announced.as_of_ms, announced.last_trade_id) == (30_000, 1)
    assert announced.sell == (0.0, 0.0, 2.0)  # only the 30 s window still holds it
    # After the held-back decay ticks at 11 s and 15 s (it left the 1 s and 5 s windows).
    assert announced.sequence == 1 * 1024 + 3


def test_no_announcement_when_a_warm_record_went_out_first():
    flows = TradeFlows()
    flows.add("S")
    flows.seen("S", 0)
    assert flows.on_trade("S", 1, 30_000, 1.0, False) is not None  # warm: published
    ticks = flows.due(10**6)
    assert [r.as_of_ms for r in ticks] == [31_000, 35_000, 60_000]  # the decay ticks only
