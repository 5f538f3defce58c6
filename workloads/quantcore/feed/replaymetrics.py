"""Prometheus metrics of the replay server (`quantcore replay --metrics-port`).

Read from the replay's own counters at scrape time, like a shard's (quantcore.feed.metrics):
the timeline only increments plain integers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from quantcore.feed.replay import Replay


class ReplayCollector(Collector):
    def __init__(self, replay: Replay) -> None:
        self.replay = replay

    def collect(self) -> Iterator[Metric]:
        replay = self.replay
        counters = (
            ("quantcore_replay_frames_sent", "websocket frames sent to clients", replay.sent),
            ("quantcore_replay_loops", "times the recordings started over", replay.loop_index),
            (
                "quantcore_replay_rate_violations",
                "clients disconnected for sending too many messages",
                replay.rate_violations,
            ),
            (
                "quantcore_replay_depth_requests",
                "REST depth snapshot requests",
                replay.depth_requests,
            ),
        )
        for name, help_, value in counters:
            yield CounterMetricFamily(name, help_, value=value)
        gauges: tuple[tuple[str, str, float], ...] = (
            ("quantcore_replay_clients", "connected websocket clients", len(replay.clients)),
            ("quantcore_replay_symbols", "symbols the replay serves", len(replay.symbols)),
            (
                "quantcore_replay_position_ratio",
                "how far into the recordings the current loop is (0-1)",
                replay.position / max(1, len(replay.lines) - 1),
            ),
        )
        for name, help_, level in gauges:
            yield GaugeMetricFamily(name, help_, value=level)


def serve_metrics(replay: Replay, port: int, host: str) -> None:
    """/metrics on `port` from a daemon thread (scrapes never wait on the replay's loop)."""
    registry = CollectorRegistry()
    registry.register(ReplayCollector(replay))
    start_http_server(port, addr=host, registry=registry)
