"""The pure parts of the platform's metrics: hop durations, librdkafka's lag statistics, what a
reconcile changed, Prometheus's configuration in local mode, and a restarted child."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from quantcore.devservices.prometheus import ScrapeTarget, prometheus_config
from quantcore.localmode.children import Children
from quantcore.operator import metrics as operator_metrics
from quantcore.routing import RoutingTable
from quantcore.serve import latency
from quantcore.serve import metrics as serve_metrics
from quantcore.stream import metrics as stream_metrics
from quantcore.v1 import signals_pb2

MS = 1_000_000


def stamped(**stamps: int) -> signals_pb2.Hops:
    return signals_pb2.Hops(**stamps)


def test_every_stamped_hop_is_measured_in_order() -> None:
    hops = stamped(
        exchange_event_ns=1000 * MS,
        feed_receive_ns=1003 * MS,
        feed_publish_ns=1004 * MS,
        kafka_append_ns=1006 * MS,
        stream_compute_ns=1016 * MS,
        sink_write_ns=1017 * MS,
        server_receive_ns=1020 * MS,
    )
    measured = latency.hop_seconds(hops)
    assert [hop for hop, _ in measured] == list(latency.HOP_NAMES)
    assert [seconds for _, seconds in measured] == pytest.approx(
        [0.003, 0.001, 0.002, 0.010, 0.001, 0.003]
    )
    # End to end is the platform's own part: from the shard's receive, not the exchange.
    assert latency.end_to_end_seconds(hops) == pytest.approx(0.017)


def test_unstamped_hops_are_left_out_and_clock_skew_counts_as_zero() -> None:
    hops = stamped(feed_receive_ns=2000 * MS, feed_publish_ns=1999 * MS, server_receive_ns=0)
    assert latency.hop_seconds(hops) == [("feed", 0.0)]
    assert latency.end_to_end_seconds(hops) is None


def test_serving_observes_each_hop_and_the_end_to_end_latency_by_kind() -> None:
    def count(hop: str) -> float:
        return serve_metrics.HOP_LATENCY.labels(hop)._sum.get()

    before = count("kafka")
    serve_metrics.observe_latency(
        stamped(feed_receive_ns=MS, feed_publish_ns=2 * MS, kafka_append_ns=5 * MS), "book"
    )
    assert count("kafka") - before == pytest.approx(0.003)
    text = generate_latest().decode()
    # Every label value is there from the start, so rules and panels see zeros.
    for hop in latency.HOP_NAMES:
        assert f'quantcore_serve_hop_latency_seconds_count{{hop="{hop}"}}' in text
    for reason in serve_metrics.DROP_REASONS:
        assert f'quantcore_serve_streams_dropped_total{{reason="{reason}"}}' in text


def test_consumer_lag_comes_from_librdkafka_statistics() -> None:
    stats = {
        "topics": {
            "book.signals": {
                "partitions": {
                    "0": {"consumer_lag": 12},
                    "1": {"consumer_lag": -1},  # not known yet
                    "-1": {"consumer_lag": 0},  # librdkafka's internal partition
                }
            }
        }
    }
    assert stream_metrics.partition_lags(json.dumps(stats)) == {("book.signals", 0): 12}
    assert stream_metrics.partition_lags("{}") == {}


def test_a_reconcile_counts_moves_and_universe_changes() -> None:
    from quantcore.routing import Route

    before = RoutingTable(4, 2, (Route("A", 0, 0), Route("B", 0, 1), Route("C", 1, 2)), 3)
    after = RoutingTable(4, 2, (Route("A", 0, 0), Route("B", 1, 1), Route("D", 1, 3)), 4)
    assert operator_metrics.routing_change(before, after) == operator_metrics.RoutingChange(
        moved=("B",), added=("D",), removed=("C",)
    )
    assert operator_metrics.routing_change(None, after) == operator_metrics.RoutingChange(
        added=("A", "B", "D")
    )
    assert operator_metrics.routing_change(after, after) == operator_metrics.NO_CHANGE


def test_a_deleted_marketfeed_takes_its_series_along() -> None:
    from quantcore.routing import Route

    feed_table = RoutingTable(2, 1, (Route("A", 0, 0),), 1)
    change = operator_metrics.RoutingChange(added=("A",))
    operator_metrics.record_feed("ns", "gone", feed_table, change, {"Deployment": 2}, 0)
    assert 'marketfeed="gone"' in generate_latest().decode()
    operator_metrics.forget_feed("ns", "gone")
    assert 'marketfeed="gone"' not in generate_latest().decode()
    operator_metrics.forget_feed("ns", "never-seen")  # nothing to forget: no error


def test_local_prometheus_scrapes_one_job_per_component_with_the_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    config = prometheus_config(
        [
            ScrapeTarget("feed", "127.0.0.1:1", {"shard": "0"}),
            ScrapeTarget("feed", "127.0.0.1:2", {"shard": "1"}),
            ScrapeTarget("serve", "127.0.0.1:3"),
        ],
        [rules],
        scrape_interval="1s",
        evaluation_interval="2s",
    )
    assert config["global"]["evaluation_interval"] == "2s"
    assert config["rule_files"] == [str(rules)]
    jobs = {job["job_name"]: job["static_configs"] for job in config["scrape_configs"]}
    assert jobs["feed"] == [
        {"targets": ["127.0.0.1:1"], "labels": {"shard": "0"}},
        {"targets": ["127.0.0.1:2"], "labels": {"shard": "1"}},
    ]
    assert jobs["serve"] == [{"targets": ["127.0.0.1:3"], "labels": {}}]


def test_a_child_with_a_restart_delay_is_started_again_and_others_fail(tmp_path: Path) -> None:
    from quantcore.devservices.process import ProcessError

    children = Children()
    quick = [sys.executable, "-c", "pass"]
    shard = children.start("feed-0", quick, tmp_path / "feed.log", restart_after=0.0)
    first_pid = shard.pid
    shard.wait_gone(10)
    assert children.check() == ["feed-0 exited with code 0; restarting in 0s"]
    assert children.check() == ["feed-0 restarted"]
    assert shard.pid != first_pid
    shard.wait_gone(10)
    children.start("stream", quick, tmp_path / "stream.log").wait_gone(10)
    with pytest.raises(ProcessError, match="stream exited"):
        children.check()


def test_routing_changes_become_events_on_the_marketfeed() -> None:
    from quantcore.operator.events import Event, routing_events
    from quantcore.routing import Route

    table = RoutingTable(4, 2, (Route("A", 0, 0), Route("B", 1, 1)), 7)
    change = operator_metrics.RoutingChange(moved=("B",), added=("A",), removed=("C", "D"))
    assert routing_events(change, table, universe=True) == [
        Event(
            "Normal",
            "UniverseChanged",
            "added 1 (A); removed 2 (C, D); routing v7: 2 symbols on 2 shard(s)",
        ),
        Event(
            "Normal",
            "Resharded",
            "moved 1 symbol(s) between shards (B); routing v7: 2 symbols on 2 shard(s)",
        ),
    ]
    listed = routing_events(operator_metrics.RoutingChange(added=("A",)), table, universe=False)
    assert [e.reason for e in listed] == ["SymbolsChanged"]
    assert routing_events(operator_metrics.NO_CHANGE, table, universe=True) == []
    many = operator_metrics.RoutingChange(added=tuple(f"S{i:03}" for i in range(30)))
    (event,) = routing_events(many, table, universe=True)
    assert "S019 and 10 more" in event.message
    assert "S020" not in event.message
