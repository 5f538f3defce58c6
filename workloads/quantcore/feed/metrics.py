"""Prometheus metrics and the health endpoint of a feed shard (aiohttp on --metrics-port).

Both are drawn from one report, the shard's `health()`, read at request time, so the hot path
only increments plain integers and /metrics can never disagree with /healthz. `/healthz`
answers that report as JSON (200 healthy, 503 not); `/live` the symbols synced and publishing,
which the operator polls while it hands symbols over between shards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

Report = Callable[[], dict[str, Any]]

BOOK_COUNTERS = (
    ("applied", "diffs applied to the local book"),
    ("dropped", "diffs dropped as already covered or duplicate"),
    ("gaps", "sequence gaps detected"),
    ("crossed", "crossed books detected"),
    ("resyncs", "book resynchronisations"),
)
CONNECTION_EVENTS = ("connects", "reconnects", "handovers", "stale", "frame_errors")


class ShardCollector(Collector):
    def __init__(self, report: Report) -> None:
        self.report = report

    def collect(self) -> Iterator[Metric]:
        report = self.report()
        messages = CounterMetricFamily(
            "quantcore_feed_messages", "frames received by type", labels=["type"]
        )
        for kind, n in report["messages"].items():
            messages.add_metric([kind], n)
        yield messages
        per_symbol = {
            name: CounterMetricFamily(f"quantcore_feed_book_{name}", help_, labels=["symbol"])
            for name, help_ in BOOK_COUNTERS
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
        for symbol, book in report["symbols"].items():
            for name, family in per_symbol.items():
                family.add_metric([symbol], book[name])
            state.add_metric([symbol], 1.0 if book["state"] == "live" else 0.0)
            if book["lag_s"] is not None:
                lag.add_metric([symbol], book["lag_s"])
                age.add_metric([symbol], book["age_s"])
        yield from per_symbol.values()
        yield state
        yield lag
        yield age
        quarantined = CounterMetricFamily(
            "quantcore_feed_quarantined", "frames refused", labels=["reason"]
        )
        for reason, n in report["quarantined"].items():
            quarantined.add_metric([reason], n)
        yield quarantined
        # The total as well: there from the start (zero), where reasons appear only once seen.
        yield CounterMetricFamily(
            "quantcore_feed_frames_refused",
            "frames refused for any reason (quarantined)",
            value=sum(report["quarantined"].values()),
        )
        kafka = CounterMetricFamily(
            "quantcore_feed_kafka_records", "records by delivery outcome", labels=["outcome"]
        )
        kafka.add_metric(["produced"], report["produced"])
        kafka.add_metric(["delivered"], report["delivered"])
        kafka.add_metric(["failed"], report["delivery_failed"])
        yield kafka
        conns = CounterMetricFamily(
            "quantcore_feed_connection_events",
            "websocket lifecycle events",
            labels=["connection", "event"],
        )
        for conn in report["connections"]:
            for event in CONNECTION_EVENTS:
                conns.add_metric([conn["name"], event], conn[event])
        yield conns
        routing = GaugeMetricFamily(
            "quantcore_feed_routing_version", "routing table version in use"
        )
        version = report["routing_version"]
        routing.add_metric([], -1 if version is None else version)
        yield routing


async def serve_metrics(
    report: Report, port: int, host: str = "127.0.0.1", *, live: Report | None = None
) -> None:
    from aiohttp import web

    registry = CollectorRegistry()
    registry.register(ShardCollector(report))

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    async def healthz(_: web.Request) -> web.Response:
        body = report()
        return web.Response(
            body=orjson.dumps(body),
            status=200 if body["healthy"] else 503,
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    if live is not None:
        answer = live

        async def live_symbols(_: web.Request) -> web.Response:
            return web.Response(body=orjson.dumps(answer()), content_type="application/json")

        app.router.add_get("/live", live_symbols)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
