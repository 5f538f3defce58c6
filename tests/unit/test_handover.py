"""Make-before-break handover (quantcore.operator.handover): unit cases and properties.

The properties simulate the operator and the shards: each round the operator applies the
step's tables, and each shard may bring live any subset of the symbols its table gives it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from quantcore.operator import handover
from quantcore.operator.planner import shard_table
from quantcore.routing import Route, RoutingTable, rebalance

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LONG = timedelta(days=1)  # a timeout the properties never reach


def split(table: RoutingTable) -> dict[int, RoutingTable]:
    return {i: shard_table(table, i) for i in range(table.shards)}


def table(routes: dict[str, int], shards: int, partitions: int = 4) -> RoutingTable:
    return RoutingTable.of(
        [Route(s, shard, len(s) % partitions) for s, shard in routes.items()],
        partitions=partitions,
        shards=shards,
    )


def symbols(step: handover.Step) -> dict[int, set[str]]:
    return {i: set(t.symbols) for i, t in step.tables.items()}


# ---- cases ----------------------------------------------------------------------------


def test_the_gaining_shard_gets_the_symbol_at_once_and_the_losing_one_keeps_it() -> None:
    before = table({"BTC": 0, "ETH": 0}, 2)
    after = table({"BTC": 0, "ETH": 1}, 2)
    s = handover.step(after, split(before), live={0: frozenset({"BTC", "ETH"})}, since={}, now=T0)
    assert symbols(s) == {0: {"BTC", "ETH"}, 1: {"ETH"}}
    assert s.pending == (handover.Move("ETH", 0, 1, T0),)
    assert not s.done
    assert s.forced == ()


def test_the_losing_shard_lets_go_once_the_gaining_one_reports_live() -> None:
    before = table({"BTC": 0, "ETH": 0}, 2)
    after = table({"BTC": 0, "ETH": 1}, 2)
    first = handover.step(after, split(before), live={}, since={}, now=T0)
    live = {0: frozenset({"BTC", "ETH"}), 1: frozenset({"ETH"})}
    second = handover.step(after, first.tables, live, since={("ETH", 1): T0}, now=T0)
    assert symbols(second) == {0: {"BTC"}, 1: {"ETH"}}
    assert second.done
    assert second.tables == split(after)


def test_symbols_removed_from_the_feed_are_released_at_once() -> None:
    before = table({"BTC": 0, "ETH": 0}, 1)
    after = table({"BTC": 0}, 1)
    s = handover.step(after, split(before), live={}, since={}, now=T0)
    assert symbols(s) == {0: {"BTC"}}
    assert s.done


def test_a_removed_shard_runs_until_its_symbols_are_live_elsewhere() -> None:
    before = table({"BTC": 0, "ETH": 1}, 2)
    after = table({"BTC": 0, "ETH": 0}, 1)
    s = handover.step(after, split(before), live={0: frozenset({"BTC"})}, since={}, now=T0)
    assert symbols(s) == {0: {"BTC", "ETH"}, 1: {"ETH"}}
    assert s.draining == (1,)
    done = handover.step(after, s.tables, {0: frozenset({"BTC", "ETH"})}, {("ETH", 0): T0}, T0)
    assert symbols(done) == {0: {"BTC", "ETH"}}  # shard 1 is gone: the reconcile prunes it
    assert done.draining == ()
    assert done.done


def test_an_unreachable_gaining_shard_blocks_only_until_the_timeout() -> None:
    before = table({"ETH": 0}, 2)
    after = table({"ETH": 1}, 2)
    since = {("ETH", 1): T0}
    limit = handover.DEFAULT_TIMEOUT
    waiting = handover.step(after, split(before), {}, since, now=T0 + limit - timedelta(seconds=1))
    assert symbols(waiting)[0] == {"ETH"}
    assert waiting.forced == ()
    late = handover.step(after, split(before), {}, since, now=T0 + limit)
    assert symbols(late) == {0: set(), 1: {"ETH"}}
    assert late.forced == (handover.Move("ETH", 0, 1, T0),)
    assert late.done


def test_a_symbol_moved_again_before_it_was_live_is_held_by_every_old_holder() -> None:
    # ETH 0 -> 1 was pending when the table moved it on to 2: both 0 and 1 keep it.
    applied = {0: shard_table(table({"ETH": 0}, 3), 0), 1: shard_table(table({"ETH": 1}, 3), 1)}
    after = table({"ETH": 2}, 3)
    s = handover.step(after, applied, live={1: frozenset({"ETH"})}, since={}, now=T0)
    assert symbols(s) == {0: {"ETH"}, 1: {"ETH"}, 2: {"ETH"}}
    assert [m.describe() for m in s.pending] == ["ETH 0->2", "ETH 1->2"]


def test_a_moving_symbol_keeps_its_partition_on_the_old_shard() -> None:
    before = RoutingTable.of([Route("ETH", 0, 3)], partitions=4, shards=2)
    after = RoutingTable.of([Route("ETH", 1, 3)], partitions=8, shards=2)  # topics grew
    s = handover.step(after, split(before), live={}, since={}, now=T0)
    assert s.tables[0].route("ETH").partition == 3
    assert s.tables[0].partitions == 8


# ---- properties -----------------------------------------------------------------------

SYMBOLS = [f"S{i:02d}" for i in range(30)]
symbol_sets = st.sets(st.sampled_from(SYMBOLS), max_size=24)
per_shard = st.integers(min_value=1, max_value=8)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[RoutingTable, list[RoutingTable]]:
    """A starting table and a few later ones (reshards, symbols in and out)."""
    start = rebalance(None, draw(symbol_sets), draw(per_shard), 4)
    later, current = [], start
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        current = rebalance(current, draw(symbol_sets), draw(per_shard), 4)
        later.append(current)
    return start, later


def bring_live(
    draw: st.DrawFn, tables: dict[int, RoutingTable], live: dict[int, frozenset[str]]
) -> dict[int, frozenset[str]]:
    """Shards go live on some of their symbols; a symbol they no longer serve is gone."""
    out = {}
    for i, t in tables.items():
        kept = live.get(i, frozenset()) & set(t.symbols)
        more = draw(st.sets(st.sampled_from(t.symbols))) if t.symbols else set()
        out[i] = frozenset(kept | more)
    return out


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.data())
def test_a_live_symbol_never_loses_its_last_live_shard(scenario, data) -> None:
    start, finals = scenario
    applied = split(start)
    live = {i: frozenset(t.symbols) for i, t in applied.items()}  # everything live at first
    since: dict[tuple[str, int], datetime] = {}
    for final in finals:
        for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
            s = handover.step(final, applied, live, since, now=T0, timeout=LONG)
            for symbol in final.symbols:
                # Given to its final shard at once...
                assert symbol in s.tables[final.route(symbol).shard].symbols
                # ...and a symbol live anywhere stays on a shard where it is live.
                was_live = {i for i, syms in live.items() if symbol in syms}
                if was_live:
                    assert any(
                        symbol in s.tables.get(i, RoutingTable(0, 0)).symbols for i in was_live
                    )
            # Nothing that left the feed is kept anywhere.
            for t in s.tables.values():
                assert set(t.symbols) <= set(final.symbols)
            assert s.forced == ()
            applied, since = s.tables, {m.key: m.since for m in s.pending}
            live = bring_live(data.draw, applied, live)


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_once_everything_is_live_the_final_table_is_reached_and_stays(scenario) -> None:
    start, finals = scenario
    final = finals[-1]
    applied = split(start)
    s = handover.step(final, applied, {}, {}, now=T0, timeout=LONG)
    all_live = {i: frozenset(final.shard_symbols(i)) for i in range(final.shards)}
    done = handover.step(final, s.tables, all_live, {m.key: m.since for m in s.pending}, T0)
    assert done.done
    assert done.tables == split(final)
    assert done.draining == ()
    # Idempotent: the converged state is a fixed point.
    assert handover.step(final, done.tables, all_live, {}, T0).tables == done.tables


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.data())
def test_a_step_applied_again_changes_nothing(scenario, data) -> None:
    start, finals = scenario
    final = finals[-1]
    applied = split(start)
    live = bring_live(data.draw, applied, {})
    first = handover.step(final, applied, live, {}, now=T0, timeout=LONG)
    since = {m.key: m.since for m in first.pending}
    # The shards have not moved on (their live symbols are those they still hold).
    live = {i: live.get(i, frozenset()) & set(t.symbols) for i, t in first.tables.items()}
    again = handover.step(
        final, first.tables, live, since, now=T0 + timedelta(seconds=5), timeout=LONG
    )
    assert again.tables == first.tables
    assert again.pending == first.pending  # same moves, same start times


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_without_any_live_report_everything_is_released_at_the_timeout(scenario) -> None:
    start, finals = scenario
    final = finals[-1]
    first = handover.step(final, split(start), {}, {}, now=T0)
    since = {m.key: m.since for m in first.pending}
    late = handover.step(final, first.tables, {}, since, now=T0 + handover.DEFAULT_TIMEOUT)
    assert late.done
    assert late.tables == split(final)
    assert {m.key for m in late.forced} == set(since)
