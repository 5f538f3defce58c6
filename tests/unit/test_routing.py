import pytest

from quantcore.routing import Route, RoutingTable


def test_json_round_trip_keeps_every_route() -> None:
    table = RoutingTable.of(
        [Route("ETHUSDT", 1, 3), Route("BTCUSDT", 0, 0)], partitions=4, shards=2, version=7
    )
    again = RoutingTable.from_json(table.to_json())
    assert again == table
    assert again.symbols == ("BTCUSDT", "ETHUSDT")
    assert again.partition_of("ETHUSDT") == 3
    assert again.shard_symbols(1) == ("ETHUSDT",)


def test_rejects_a_symbol_listed_twice() -> None:
    with pytest.raises(ValueError, match="twice"):
        RoutingTable.of([Route("BTCUSDT", 0, 0), Route("BTCUSDT", 1, 1)], partitions=2, shards=2)


def test_rejects_a_partition_out_of_range() -> None:
    with pytest.raises(ValueError, match="partition 4"):
        RoutingTable.of([Route("BTCUSDT", 0, 4)], partitions=4, shards=1)
