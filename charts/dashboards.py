"""Writes the Grafana dashboards the chart ships (charts/quantcore/files/dashboards/*.json).

One place describes every panel and its PromQL; `make chart-dashboards` writes the JSON and a
unit test fails when the files are stale. The chart renders each file into a ConfigMap that
Grafana's dashboard sidecar loads (templates/dashboards.yaml); the observability e2e runs every
panel's query against a Prometheus scraping `quantcore up`.

Jobs are components (feed, stream, serve, replay, operator), as the rule file says.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RATE = "$__rate_interval"  # Grafana's rate window: at least four scrape intervals


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    description: str = ""


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[tuple[str, tuple[Panel, ...]], ...]
    tags: tuple[str, ...] = field(default=("quantcore",))


def q(expr: str, legend: str = "") -> Query:
    return Query(expr, legend)


def hop_quantile(quantile: float) -> Query:
    return q(
        f"histogram_quantile({quantile}, sum by (hop, le) "
        f"(rate(quantcore_serve_hop_latency_seconds_bucket[{RATE}])))",
        f"{{{{hop}}}} p{round(quantile * 100)}",
    )


def e2e_quantile(quantile: float) -> Query:
    return q(
        f"histogram_quantile({quantile}, sum by (kind, le) "
        f"(rate(quantcore_serve_end_to_end_latency_seconds_bucket[{RATE}])))",
        f"{{{{kind}}}} p{round(quantile * 100)}",
    )


PIPELINE = Dashboard(
    uid="quantcore-pipeline",
    title="QuantCore / Pipeline",
    description="Is it live, is it late, is it correct: every hop from the exchange to clients.",
    rows=(
        (
            "Live",
            (
                Panel(
                    "Books live",
                    (
                        q("sum(quantcore_feed_book_live)", "live"),
                        q("count(quantcore_feed_book_live)", "books"),
                    ),
                    description="Books synced and publishing, of all books the shards hold.",
                ),
                Panel(
                    "Processes up",
                    (q('sum by (job) (up{job=~"feed|stream|serve|replay|operator"})', "{{job}}"),),
                ),
                Panel(
                    "Book resyncs",
                    (q(f"sum(rate(quantcore_feed_book_resyncs_total[{RATE}]))", "resyncs/s"),),
                    unit="ops",
                ),
                Panel(
                    "Clients",
                    (q("sum(quantcore_serve_active_streams)", "streams"),),
                ),
            ),
        ),
        (
            "Throughput per hop",
            (
                Panel(
                    "Rates per hop",
                    (
                        q(f"sum(rate(quantcore_feed_messages_total[{RATE}]))", "exchange frames"),
                        q(
                            f'sum(rate(quantcore_feed_kafka_records_total{{outcome="delivered"}}[{RATE}]))',
                            "Kafka records",
                        ),
                        q(f"sum(rate(quantcore_relay_rows_received_total[{RATE}]))", "signal rows"),
                        q(
                            f'sum(rate(quantcore_relay_rows_total{{outcome="applied"}}[{RATE}]))',
                            "Redis writes",
                        ),
                        q(
                            f"sum(rate(quantcore_serve_updates_received_total[{RATE}]))",
                            "served in",
                        ),
                        q(
                            f"sum(rate(quantcore_serve_updates_sent_total[{RATE}]))",
                            "sent to clients",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Relay consumer lag",
                    (q("sum by (topic) (quantcore_relay_consumer_lag)", "{{topic}}"),),
                ),
            ),
        ),
        (
            "Late",
            (
                Panel("Latency per hop (p99)", (hop_quantile(0.99),), unit="s"),
                Panel("Latency per hop (p50)", (hop_quantile(0.5),), unit="s"),
                Panel(
                    "End to end, shard to serving",
                    (e2e_quantile(0.5), e2e_quantile(0.99)),
                    unit="s",
                ),
                Panel(
                    "Latency objective: share of book updates over 500 ms",
                    (
                        q(
                            "1 - sum(rate(quantcore_serve_end_to_end_latency_seconds_bucket"
                            f'{{kind="book", le="0.5"}}[{RATE}])) / '
                            "sum(rate(quantcore_serve_end_to_end_latency_seconds_count"
                            f'{{kind="book"}}[{RATE}]))',
                            "late share (objective 1%)",
                        ),
                    ),
                    unit="percentunit",
                ),
            ),
        ),
        (
            "Correct",
            (
                Panel(
                    "Rows refused",
                    (
                        q(
                            f'sum by (outcome) (rate(quantcore_relay_rows_total{{outcome!="applied"}}[{RATE}]))',
                            "{{outcome}}",
                        ),
                        q(
                            f"sum(rate(quantcore_feed_frames_refused_total[{RATE}]))",
                            "feed refused",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Kafka delivery failures",
                    (
                        q(
                            f'sum(rate(quantcore_feed_kafka_records_total{{outcome="failed"}}[{RATE}]))',
                            "failed",
                        ),
                    ),
                    unit="ops",
                ),
            ),
        ),
    ),
)

FEED = Dashboard(
    uid="quantcore-feed",
    title="QuantCore / Feed shards",
    description="Websocket connections, order books and Kafka delivery of every feed shard.",
    rows=(
        (
            "Books",
            (
                Panel("Book live by symbol", (q("quantcore_feed_book_live", "{{symbol}}"),)),
                Panel(
                    "Exchange lag by symbol",
                    (q("quantcore_feed_lag_seconds", "{{symbol}}"),),
                    unit="s",
                    description="Receive time minus the exchange's event time.",
                ),
                Panel(
                    "Time since the last update",
                    (q("quantcore_feed_update_age_seconds", "{{symbol}}"),),
                    unit="s",
                ),
                Panel(
                    "Diffs applied and dropped",
                    (
                        q(
                            f"sum by (symbol) (rate(quantcore_feed_book_applied_total[{RATE}]))",
                            "{{symbol}} applied",
                        ),
                        q(
                            f"sum by (symbol) (rate(quantcore_feed_book_dropped_total[{RATE}]))",
                            "{{symbol}} dropped",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Gaps, crossed books, resyncs",
                    (
                        q(
                            f"sum by (symbol) (increase(quantcore_feed_book_gaps_total[{RATE}]))",
                            "{{symbol}} gaps",
                        ),
                        q(
                            f"sum by (symbol) (increase(quantcore_feed_book_crossed_total[{RATE}]))",
                            "{{symbol}} crossed",
                        ),
                        q(
                            f"sum by (symbol) (increase(quantcore_feed_book_resyncs_total[{RATE}]))",
                            "{{symbol}} resyncs",
                        ),
                    ),
                ),
            ),
        ),
        (
            "Frames and Kafka",
            (
                Panel(
                    "Frames by type",
                    (
                        q(
                            f"sum by (type) (rate(quantcore_feed_messages_total[{RATE}]))",
                            "{{type}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Kafka records by outcome",
                    (
                        q(
                            f"sum by (outcome) (rate(quantcore_feed_kafka_records_total[{RATE}]))",
                            "{{outcome}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Frames refused",
                    (
                        q(
                            f"sum by (instance) (rate(quantcore_feed_frames_refused_total[{RATE}]))",
                            "{{instance}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Connection events",
                    (
                        q(
                            f"sum by (event) (increase(quantcore_feed_connection_events_total[{RATE}]))",
                            "{{event}}",
                        ),
                    ),
                ),
                Panel(
                    "Routing table version",
                    (q("quantcore_feed_routing_version", "{{instance}}"),),
                ),
            ),
        ),
    ),
)

STREAM = Dashboard(
    uid="quantcore-stream",
    title="QuantCore / Stream job and relay",
    description="The Spark queries as their driver sees them, and the relay to Redis.",
    rows=(
        (
            "Relay",
            (
                Panel(
                    "Rows by outcome",
                    (
                        q(f"sum(rate(quantcore_relay_rows_received_total[{RATE}]))", "received"),
                        q(
                            f"sum by (outcome) (rate(quantcore_relay_rows_total[{RATE}]))",
                            "{{outcome}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Consumer lag by partition",
                    (q("quantcore_relay_consumer_lag", "{{topic}}/{{partition}}"),),
                ),
                Panel(
                    "Age of the newest row",
                    (q("time() - quantcore_relay_last_record_timestamp_seconds", "age"),),
                    unit="s",
                    description="How long ago the stream job wrote the newest row the relay has.",
                ),
                Panel(
                    "Redis batch time (p99)",
                    (
                        q(
                            "histogram_quantile(0.99, sum by (le) "
                            f"(rate(quantcore_relay_batch_seconds_bucket[{RATE}])))",
                            "p99",
                        ),
                    ),
                    unit="s",
                ),
                Panel(
                    "Redis retries",
                    (q(f"sum(increase(quantcore_relay_redis_retries_total[{RATE}]))", "retries"),),
                ),
            ),
        ),
        (
            "Spark queries",
            (
                Panel("Queries active", (q("quantcore_stream_query_active", "{{query}}"),)),
                Panel(
                    "Input rows per second (last batch)",
                    (q("quantcore_stream_query_input_rows_per_second", "{{query}}"),),
                    unit="ops",
                ),
                Panel("Batch id", (q("quantcore_stream_query_batch_id", "{{query}}"),)),
                Panel(
                    "Stream hop latency (p99)",
                    (
                        q(
                            "histogram_quantile(0.99, sum by (hop, le) (rate("
                            'quantcore_serve_hop_latency_seconds_bucket{hop=~"stream|relay"}'
                            f"[{RATE}])))",
                            "{{hop}}",
                        ),
                    ),
                    unit="s",
                ),
            ),
        ),
    ),
)

SERVE = Dashboard(
    uid="quantcore-serve",
    title="QuantCore / Serving",
    description="The gRPC tier: updates in and out, clients, latency per hop.",
    rows=(
        (
            "Updates and clients",
            (
                Panel(
                    "Updates",
                    (
                        q(f"sum(rate(quantcore_serve_updates_received_total[{RATE}]))", "received"),
                        q(f"sum(rate(quantcore_serve_updates_sent_total[{RATE}]))", "sent"),
                        q(
                            f"sum(rate(quantcore_serve_updates_conflated_total[{RATE}]))",
                            "conflated",
                        ),
                        q(f"sum(rate(quantcore_serve_bad_updates_total[{RATE}]))", "bad"),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Streams",
                    (
                        q("sum(quantcore_serve_active_streams)", "open"),
                        q(
                            f"sum by (reason) (increase(quantcore_serve_streams_dropped_total[{RATE}]))",
                            "dropped: {{reason}}",
                        ),
                        q(
                            f"sum(increase(quantcore_serve_rejected_streams_total[{RATE}]))",
                            "rejected",
                        ),
                    ),
                ),
                Panel(
                    "Redis link",
                    (
                        q("quantcore_serve_redis_connected", "{{instance}} connected"),
                        q(f"sum(increase(quantcore_serve_redis_resyncs_total[{RATE}]))", "resyncs"),
                    ),
                ),
                Panel("Routed symbols", (q("quantcore_serve_routed_symbols", "{{instance}}"),)),
            ),
        ),
        (
            "Latency",
            (
                Panel("Per hop (p99)", (hop_quantile(0.99),), unit="s"),
                Panel(
                    "End to end (shard to serving)",
                    (e2e_quantile(0.5), e2e_quantile(0.99)),
                    unit="s",
                ),
                Panel(
                    "Server dwell (p99)",
                    (
                        q(
                            "histogram_quantile(0.99, sum by (le) "
                            f"(rate(quantcore_serve_dwell_seconds_bucket[{RATE}])))",
                            "p99",
                        ),
                    ),
                    unit="s",
                    description="From Redis to a client's stream (oldest update of each batch).",
                ),
            ),
        ),
    ),
)

OPERATOR = Dashboard(
    uid="quantcore-operator",
    title="QuantCore / Operator",
    description="Reconciles, the children of every MarketFeed, reshards and universes.",
    rows=(
        (
            "Reconciles",
            (
                Panel(
                    "Reconciles by outcome",
                    (
                        q(
                            f"sum by (outcome) (rate(quantcore_operator_reconciles_total[{RATE}]))",
                            "{{outcome}}",
                        ),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Reconcile duration (p99)",
                    (
                        q(
                            "histogram_quantile(0.99, sum by (le) "
                            f"(rate(quantcore_operator_reconcile_duration_seconds_bucket[{RATE}])))",
                            "p99",
                        ),
                    ),
                    unit="s",
                ),
            ),
        ),
        (
            "MarketFeeds",
            (
                Panel(
                    "Children by kind",
                    (
                        q(
                            "sum by (marketfeed, kind) (quantcore_operator_children)",
                            "{{marketfeed}} {{kind}}",
                        ),
                    ),
                ),
                Panel(
                    "Shards and symbols",
                    (
                        q("quantcore_operator_shards", "{{marketfeed}} shards"),
                        q("quantcore_operator_routed_symbols", "{{marketfeed}} symbols"),
                    ),
                ),
                Panel(
                    "Reshard moves",
                    (
                        q(
                            f"sum by (marketfeed) (increase(quantcore_operator_reshard_moves_total[{RATE}]))",
                            "{{marketfeed}}",
                        ),
                    ),
                ),
                Panel(
                    "Universe changes",
                    (
                        q(
                            f"sum by (marketfeed, change) (increase(quantcore_operator_universe_changes_total[{RATE}]))",
                            "{{marketfeed}} {{change}}",
                        ),
                    ),
                ),
                Panel(
                    "Handover timeouts",
                    (
                        q(
                            f"sum by (marketfeed) (increase(quantcore_operator_handover_timeouts_total[{RATE}]))",
                            "{{marketfeed}}",
                        ),
                    ),
                ),
            ),
        ),
    ),
)

REPLAY = Dashboard(
    uid="quantcore-replay",
    title="QuantCore / Replay exchange",
    description="The replay server that stands in for the exchange (local mode, test ground).",
    rows=(
        (
            "Replay",
            (
                Panel(
                    "Frames sent",
                    (q(f"sum(rate(quantcore_replay_frames_sent_total[{RATE}]))", "frames/s"),),
                    unit="ops",
                ),
                Panel("Clients", (q("quantcore_replay_clients", "{{instance}}"),)),
                Panel(
                    "Position in the recordings",
                    (q("quantcore_replay_position_ratio", "{{instance}}"),),
                    unit="percentunit",
                ),
                Panel(
                    "Depth snapshots and loops",
                    (
                        q(
                            f"sum(increase(quantcore_replay_depth_requests_total[{RATE}]))",
                            "snapshots",
                        ),
                        q(f"sum(increase(quantcore_replay_loops_total[{RATE}]))", "loops"),
                        q(
                            f"sum(increase(quantcore_replay_rate_violations_total[{RATE}]))",
                            "rate violations",
                        ),
                    ),
                ),
            ),
        ),
    ),
)

DASHBOARDS = (PIPELINE, FEED, STREAM, SERVE, OPERATOR, REPLAY)
WIDTH = 24  # Grafana's grid
PANEL_W, PANEL_H = 8, 8


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": PANEL_H, "w": PANEL_W, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
        "targets": [
            {
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": query.expr,
                "legendFormat": query.legend,
                "refId": chr(ord("A") + i),
            }
            for i, query in enumerate(panel.queries)
        ],
    }


def render(dashboard: Dashboard) -> dict[str, Any]:
    """One dashboard as Grafana's JSON model: a collapsed-free row per group, panels in a grid."""
    panels: list[dict[str, Any]] = []
    panel_id = 1
    y = 0
    for title, row in dashboard.rows:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id += 1
        y += 1
        for i, panel in enumerate(row):
            x = (i * PANEL_W) % WIDTH
            if i and x == 0:
                y += PANEL_H
            panels.append(_panel(panel, panel_id, x, y))
            panel_id += 1
        y += PANEL_H
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": list(dashboard.tags),
        "editable": True,
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "utc",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "panels": panels,
    }


def files() -> dict[str, str]:
    """file name -> JSON text, for every dashboard."""
    return {
        f"{d.uid.removeprefix('quantcore-')}.json": json.dumps(render(d), indent=2) + "\n"
        for d in DASHBOARDS
    }


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files().items():
        (out / name).write_text(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
