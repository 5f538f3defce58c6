"""Reading the feed shards' /live answers (quantcore.operator.shardlive): the pure parts.

The HTTP path itself runs against real shards in tests/integration/test_feed_handover.py.
"""

from __future__ import annotations

import pytest

from quantcore.operator import shardlive
from quantcore.operator.planner import sample_feed


def test_an_answer_is_the_shard_and_its_live_symbols() -> None:
    body = b'{"shard": 2, "routingVersion": 0, "live": ["BTCUSDT", "ETHUSDT"]}'
    assert shardlive.parse(body) == (2, frozenset({"BTCUSDT", "ETHUSDT"}))


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"live": []}',
        b'{"shard": -1, "live": []}',
        b'{"shard": true, "live": []}',
        b'{"shard": 0, "live": "BTCUSDT"}',
        b'{"shard": 0, "live": [1]}',
        b"\xff\xfe",
    ],
)
def test_anything_else_is_refused_with_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"."):  # JSON, shape and type errors alike
        shardlive.parse(body)


def test_two_pods_of_one_shard_count_together() -> None:
    answers = [(0, frozenset({"A"})), (1, frozenset({"B"})), (0, frozenset({"C"}))]
    assert shardlive.collect(answers) == {0: frozenset({"A", "C"}), 1: frozenset({"B"})}


def test_the_shards_are_found_through_the_feeds_headless_metrics_service() -> None:
    feed = sample_feed(name="btc", namespace="markets")
    assert shardlive.service_host(feed) == "btc-feed.markets.svc"
    assert shardlive._url("10.0.0.7", 9102) == "http://10.0.0.7:9102/live"
    assert shardlive._url("fd00::7", 9102) == "http://[fd00::7]:9102/live"
