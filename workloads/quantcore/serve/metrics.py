"""Prometheus metrics of the serving tier (one set per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from quantcore import signalstore
from quantcore.serve import access, latency
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
# Calls the server refused before serving them, by reason (quantcore.serve.access.REASONS):
# missing or bad token, a method or symbol the identity may not use, a per-identity quota.
# TLS handshakes that fail (no or an untrusted client certificate, a plaintext client) never
# reach the application and are not counted here.
REFUSED_CALLS = Counter(
    "quantcore_serve_refused_calls_total",
    "Calls refused by authentication, authorization or a per-identity quota, by reason",
    ["reason"],
)
TLS_RELOADS = Counter(
    "quantcore_serve_tls_reloads_total",
    "Changes of the TLS files: loaded, or invalid (the current certificate kept)",
    ["outcome"],
)
TLS_CERT_EXPIRY = Gauge(
    "quantcore_serve_tls_certificate_expiry_timestamp_seconds",
    "notAfter of the served certificate, as a Unix time (0 without TLS)",
)
TOKEN_RELOADS = Counter(
    "quantcore_serve_token_reloads_total",
    "Changes of the bearer-token file: loaded, or invalid (the current tokens kept)",
    ["outcome"],
)
# History calls by how they ended: complete (the interval's last row sent), truncated (the
# row limit per call reached; the client goes on with the token), invalid, no_lake, failed
# (the lake could not be read), abandoned (the client left first). Refusals are in
# REFUSED_CALLS, as for every method.
HISTORY_OUTCOMES = ("complete", "truncated", "invalid", "no_lake", "failed", "abandoned")
HISTORY_CALLS = Counter(
    "quantcore_serve_history_calls_total", "History calls served, by outcome", ["outcome"]
)
HISTORY_ROWS = Counter("quantcore_serve_history_rows_total", "Lake rows sent by History calls")
HISTORY_PAGE_SECONDS = Histogram(
    "quantcore_serve_history_page_seconds",
    "Time to read one History page from the lake",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
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
for _reason in access.REASONS:
    REFUSED_CALLS.labels(_reason)
for _outcome in HISTORY_OUTCOMES:
    HISTORY_CALLS.labels(_outcome)
for _outcome in ("loaded", "invalid"):
    TLS_RELOADS.labels(_outcome)
    TOKEN_RELOADS.labels(_outcome)


def observe_latency(hops: signals_pb2.Hops, kind: str) -> None:
    for hop, seconds in latency.hop_seconds(hops):
        HOP_LATENCY.labels(hop).observe(seconds)
    total = latency.end_to_end_seconds(hops)
    if total is not None:
        END_TO_END_LATENCY.labels(kind).observe(total)
