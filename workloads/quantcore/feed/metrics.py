"""Prometheus metrics and the health endpoint of a feed shard (aiohttp on --metrics-port).

Metrics are read from the shard's own counters at scrape time, so the hot path only
increments plain integers. `/healthz` answers JSON (200 healthy, 503 not).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from quantcore.feed.shard import Shard


class ShardCollector(Collector):
    def __init__(self, shard: Shard) -> None:
        self.shard = shard

    def collect(self) -> Iterator[Metric]:
        shard = self.shard
        norm = shard.normalizer
        producer = shard.producer
        if norm is None or producer is None:
            return
        messages = CounterMetricFamily(
            "quantcore_feed_messages", "frames received by type", labels=["type"]
        )
        for kind, n in norm.messages.items():
            messages.add_metric([kind], n)
        yield messages
        per_symbol = {
            name: CounterMetricFamily(f"quantcore_feed_book_{name}", help_, labels=["symbol"])
            for name, help_ in (
                ("applied", "diffs applied to the local book"),
                ("dropped", "diffs dropped as already covered or duplicate"),
                ("gaps", "sequence gaps detected"),
                ("crossed", "crossed books detected"),
                ("resyncs", "book resynchronisations"),
            )
        }
        state = GaugeMetricFamily(
            "quantcore_feed_book_live", "1 if the symbol's book is live", labels=["symbol"]
        )
        lag = GaugeMetricFamily(
            "quantcore_feed_lag_seconds",
            "receive time minus exchange event time of the last update",
            labels=["symbol"],
        )
        age = GaugeMetricFamily(
            "quantcore_feed_update_age_seconds",
            "time since the last book update",
            labels=["symbol"],
        )
        now_ns = time.time_ns()
        for symbol, sync in norm.syncs.items():
            c = sync.counters
            for name, family in per_symbol.items():
                family.add_metric([symbol], getattr(c, name))
            state.add_metric([symbol], 1.0 if sync.state.value == "live" else 0.0)
            last = norm.last_update.get(symbol)
            if last is not None:
                event_ms, recv_ns = last
                lag.add_metric([symbol], (recv_ns - event_ms * 1_000_000) / 1e9)
                age.add_metric([symbol], (now_ns - recv_ns) / 1e9)
        yield from per_symbol.values()
        yield state
        yield lag
        yield age
        quarantined = CounterMetricFamily(
            "quantcore_feed_quarantined", "frames refused", labels=["reason"]
        )
        for reason, n in norm.quarantined.items():
            quarantined.add_metric([reason], n)
        yield quarantined
        kafka = CounterMetricFamily(
            "quantcore_feed_kafka_records", "records by delivery outcome", labels=["outcome"]
        )
        kafka.add_metric(["produced"], producer.produced)
        kafka.add_metric(["delivered"], producer.delivered)
        kafka.add_metric(["failed"], producer.failed)
        yield kafka
        conns = CounterMetricFamily(
            "quantcore_feed_connection_events",
            "websocket lifecycle events",
            labels=["connection", "event"],
        )
        for conn in shard.connections:
            for event in ("connects", "reconnects", "handovers", "stale", "frame_errors"):
                conns.add_metric([conn.name, event], getattr(conn, event))
        yield conns
        routing = GaugeMetricFamily(
            "quantcore_feed_routing_version", "routing table version in use"
        )
        routing.add_metric([], shard.table.version if shard.table else -1)
        yield routing


async def serve_metrics(shard: Shard, port: int, host: str = "127.0.0.1") -> None:
    from aiohttp import web

    registry = CollectorRegistry()
    registry.register(ShardCollector(shard))

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    async def healthz(_: web.Request) -> web.Response:
        report = shard.health()
        return web.Response(
            body=orjson.dumps(report),
            status=200 if report["healthy"] else 503,
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
