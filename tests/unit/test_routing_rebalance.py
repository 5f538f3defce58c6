"""Property tests of the routing rules (docs/architecture.md): rebalance(table, symbols, ...)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from quantcore.routing import RoutingTable, rebalance, shards_for

SYMBOLS = [f"S{i:03d}USDT" for i in range(240)]
symbol_sets = st.sets(st.sampled_from(SYMBOLS), max_size=200)
per_shard = st.integers(min_value=1, max_value=40)
partitions = st.integers(min_value=1, max_value=64)


def min_moves(old: RoutingTable, wanted: set[str], shards: int) -> int:
    """The fewest kept symbols that must change shard to reach loads within one of each other."""
    kept = [old.route(s) for s in wanted if old.get(s) is not None]
    drained = sum(1 for r in kept if r.shard >= shards)
    per = sorted((sum(1 for r in kept if r.shard == i) for i in range(shards)), reverse=True)
    base, extra = divmod(len(wanted), shards)
    excess = sum(max(0, k - (base + (1 if rank < extra else 0))) for rank, k in enumerate(per))
    return drained + excess


@settings(max_examples=300, deadline=None)
@given(symbol_sets, symbol_sets, per_shard, per_shard, partitions, partitions)
def test_rebalance_rules(before, after, per_a, per_b, parts_a, parts_b) -> None:
    old = rebalance(None, before, per_a, parts_a)
    new = rebalance(old, after, per_b, parts_b)

    # Every symbol assigned exactly once, nothing else.
    assert sorted(new.symbols) == sorted(after)
    assert len(set(new.symbols)) == len(new.symbols)
    # Shard count follows the load; loads within one of each other.
    assert new.shards == shards_for(len(after), per_b)
    loads = [len(new.shard_symbols(i)) for i in range(new.shards)]
    assert max(loads) - min(loads) <= 1
    assert max(loads) <= per_b
    # Partitions never shrink; a staying symbol keeps its partition.
    assert new.partitions == max(old.partitions, parts_b)
    for s in before & after:
        assert new.partition_of(s) == old.partition_of(s)
    # Minimal moves.
    moved = sum(1 for s in before & after if new.route(s).shard != old.route(s).shard)
    assert moved == min_moves(old, after, new.shards)


@given(symbol_sets, per_shard, partitions)
def test_fresh_table_balances_partitions(symbols, per, parts) -> None:
    table = rebalance(None, symbols, per, parts)
    counts = [sum(1 for r in table.routes if r.partition == p) for p in range(table.partitions)]
    assert max(counts) - min(counts) <= 1


@given(symbol_sets, per_shard, partitions)
def test_same_input_is_a_fixed_point(symbols, per, parts) -> None:
    table = rebalance(None, symbols, per, parts)
    again = rebalance(table, symbols, per, parts)
    assert again == table
    assert again.version == table.version
    assert RoutingTable.from_json(again.to_json()) == again


def test_growth_touches_no_kept_symbol_when_shards_have_room() -> None:
    old = rebalance(None, SYMBOLS[:30], 10, 12)
    new = rebalance(old, SYMBOLS[:100], 10, 12)
    assert new.shards == 10
    assert new.version == old.version + 1
    for s in SYMBOLS[:30]:
        assert new.route(s) == old.route(s)
    # 30 -> 20 drains the third shard only.
    small = rebalance(new, SYMBOLS[:20], 10, 12)
    assert small.shards == 2
    assert small.partitions == 12
