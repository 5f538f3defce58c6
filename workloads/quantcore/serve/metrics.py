"""Prometheus metrics of the serving tier (one set per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from quantcore import signalstore
from quantcore.serve import latency
from quantcore.v1 import signals_pb2

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
STREAMS_DROPPED = Counter(
    "quantcore_serve_streams_dropped_total",
    "Subscribe streams the server ended itself, by reason (clients leaving are not counted)",
    ["reason"],
)
DROP_REASONS = ("queue_closed", "store_unavailable")
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
# Where each update's time went, from its hop stamps (quantcore.serve.latency), observed once
# per update received (not per client): the per-hop view and the latency objective's input.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
HOP_LATENCY = Histogram(
    "quantcore_serve_hop_latency_seconds",
    "Time an update spent in each hop, from its hop timestamps",
    ["hop"],
    buckets=LATENCY_BUCKETS,
)
END_TO_END_LATENCY = Histogram(
    "quantcore_serve_end_to_end_latency_seconds",
    "Time from the feed shard receiving the exchange's frame to the serving tier receiving the"
    " update, by kind of update",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
ROUTING_ERRORS = Counter(
    "quantcore_serve_routing_errors_total", "Routing files that could not be read (table kept)"
)

# Every label value exists from the start, so dashboards and rules see zeros, not absences.
for _hop in latency.HOP_NAMES:
    HOP_LATENCY.labels(_hop)
for _reason in DROP_REASONS:
    STREAMS_DROPPED.labels(_reason)
for _kind in signalstore.KINDS:
    END_TO_END_LATENCY.labels(_kind)


def observe_latency(hops: signals_pb2.Hops, kind: str) -> None:
    for hop, seconds in latency.hop_seconds(hops):
        HOP_LATENCY.labels(hop).observe(seconds)
    total = latency.end_to_end_seconds(hops)
    if total is not None:
        END_TO_END_LATENCY.labels(kind).observe(total)
