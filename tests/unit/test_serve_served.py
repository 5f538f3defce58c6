"""The served symbol set: the routing table's symbols, never older tables, nothing before one."""

from __future__ import annotations

import asyncio

from quantcore.routing import Route, RoutingTable
from quantcore.serve.conflation import ConflatingQueue, Update
from quantcore.serve.fanout import Fanout, Subscription
from quantcore.serve.served import Change, ServedSymbols


def table(version: int, *symbols: str) -> RoutingTable:
    return RoutingTable.of(
        [Route(s, 0, 0) for s in symbols], partitions=1, shards=1, version=version
    )


def update(symbol: str, seq: int, kind: str = "book") -> Update:
    return Update(symbol, kind, seq, f"{symbol}:{seq}".encode(), 0)


def test_without_a_table_every_symbol_is_served() -> None:
    served = ServedSymbols(routed=False)
    assert served.loaded
    assert served.allows("ANYUSDT")
    assert served.select(["B", "A"]) == ["A", "B"]
    assert served.symbols is None


def test_a_routed_server_serves_nothing_until_its_table_arrives() -> None:
    served = ServedSymbols(routed=True)
    assert not served.loaded
    assert served.select(["BTCUSDT"]) == []
    change = served.apply(table(1, "BTCUSDT", "ETHUSDT"))
    assert change == Change(added=frozenset({"BTCUSDT", "ETHUSDT"}), removed=frozenset())
    assert served.loaded
    assert served.select(["SOLUSDT", "ETHUSDT", "BTCUSDT"]) == ["BTCUSDT", "ETHUSDT"]


def test_a_new_table_reports_who_came_and_who_left() -> None:
    served = ServedSymbols(routed=True)
    served.apply(table(1, "BTCUSDT", "ETHUSDT"))
    change = served.apply(table(2, "ETHUSDT", "SOLUSDT"))
    assert change == Change(added=frozenset({"SOLUSDT"}), removed=frozenset({"BTCUSDT"}))
    assert not served.allows("BTCUSDT")
    assert served.symbols == frozenset({"ETHUSDT", "SOLUSDT"})


def test_an_older_table_is_ignored() -> None:
    served = ServedSymbols(routed=True)
    served.apply(table(5, "BTCUSDT"))
    assert served.apply(table(4, "ETHUSDT")) is None
    assert served.symbols == frozenset({"BTCUSDT"})
    assert served.version == 5


def test_discard_drops_only_the_named_symbols_pending_updates() -> None:
    queue = ConflatingQueue()
    queue.offer(update("BTCUSDT", 1))
    queue.offer(update("BTCUSDT", 1, "trades"))
    queue.offer(update("ETHUSDT", 1))
    assert queue.discard(frozenset({"BTCUSDT"})) == 2
    assert len(queue) == 1


async def test_fanout_sends_nothing_of_a_departed_symbol() -> None:
    served = ServedSymbols(routed=True)
    served.apply(table(1, "BTCUSDT", "ETHUSDT"))
    fanout = Fanout("redis://127.0.0.1:1/0", served=served)
    everything = Subscription(None, frozenset({"book"}), ConflatingQueue())
    explicit = Subscription(frozenset({"BTCUSDT"}), frozenset({"book"}), ConflatingQueue())
    fanout.attach(everything)
    fanout.attach(explicit)
    fanout.dispatch(update("BTCUSDT", 1))  # queued, not yet read
    change = served.apply(table(2, "ETHUSDT"))
    assert change is not None
    fanout.forget(change.removed)
    fanout.dispatch(update("BTCUSDT", 2))  # the stream job still draining
    fanout.dispatch(update("ETHUSDT", 7))
    assert len(explicit.queue) == 0
    got = await asyncio.wait_for(everything.queue.get_many(10), 1)
    assert [(u.symbol, u.sequence) for u in got] == [("ETHUSDT", 7)]
