"""Prometheus metrics of the serving tier (one set per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

UPDATES_RECEIVED = Counter(
    "quantcore_serve_updates_received_total", "Updates received from Redis pub/sub"
)
UPDATES_SENT = Counter("quantcore_serve_updates_sent_total", "Updates written to client streams")
UPDATES_CONFLATED = Counter(
    "quantcore_serve_updates_conflated_total",
    "Updates replaced by a newer value before a slow client read them",
)
BAD_UPDATES = Counter(
    "quantcore_serve_bad_updates_total", "Pub/sub messages that were not a valid SignalUpdate"
)
ACTIVE_STREAMS = Gauge("quantcore_serve_active_streams", "Open Subscribe streams")
REJECTED_STREAMS = Counter(
    "quantcore_serve_rejected_streams_total", "Subscribe calls refused by the stream limit"
)
REDIS_CONNECTED = Gauge("quantcore_serve_redis_connected", "1 while the pub/sub link is up")
REDIS_RESYNCS = Counter(
    "quantcore_serve_redis_resyncs_total", "Snapshots re-read after the pub/sub link came back"
)
SERVER_DWELL = Histogram(
    "quantcore_serve_dwell_seconds",
    "Time from receiving an update from Redis to writing it to a client (oldest of each batch)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
ROUTING_VERSION = Gauge(
    "quantcore_serve_routing_version", "Version of the routing table that names the served symbols"
)
SERVED_SYMBOLS = Gauge(
    "quantcore_serve_routed_symbols", "Symbols the routing table names (the served set)"
)
ROUTING_ERRORS = Counter(
    "quantcore_serve_routing_errors_total", "Routing files that could not be read (table kept)"
)
