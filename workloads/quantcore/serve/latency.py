"""Where an update's time went: its hop stamps (quantcore.v1.Hops) as per-hop durations.

Pure, so the serving tier's histograms (quantcore.serve.metrics) and tests read one definition.
A hop counts only when both of its stamps were taken (a hop that did not stamp leaves 0); a
negative duration (two hosts' clocks disagree) counts as 0 rather than being dropped, so the
histograms' counts stay equal to the updates received.
"""

from __future__ import annotations

from quantcore.v1 import signals_pb2

# (hop, stamp it starts at, stamp it ends at), in the order an update travels.
HOPS = (
    ("exchange", "exchange_event_ns", "feed_receive_ns"),  # exchange -> shard socket
    ("feed", "feed_receive_ns", "feed_publish_ns"),  # parse, book, encode
    ("kafka", "feed_publish_ns", "kafka_append_ns"),  # producer -> broker log
    ("stream", "kafka_append_ns", "stream_compute_ns"),  # Spark read, compute, sink
    ("relay", "stream_compute_ns", "sink_write_ns"),  # signals topic -> relay
    ("redis", "sink_write_ns", "server_receive_ns"),  # compare-and-set, PUBLISH, pub/sub
)
HOP_NAMES = tuple(name for name, _, _ in HOPS)
# The platform's own latency: from the shard receiving the exchange's frame to the serving
# tier holding the update (the exchange's clock and network are not ours to promise).
END_TO_END = ("feed_receive_ns", "server_receive_ns")


def _span(hops: signals_pb2.Hops, start: str, end: str) -> float | None:
    begin, finish = getattr(hops, start), getattr(hops, end)
    if begin <= 0 or finish <= 0:
        return None
    return max(0, finish - begin) / 1e9


def hop_seconds(hops: signals_pb2.Hops) -> list[tuple[str, float]]:
    """(hop, seconds) for every hop whose two stamps are set."""
    out = []
    for name, start, end in HOPS:
        seconds = _span(hops, start, end)
        if seconds is not None:
            out.append((name, seconds))
    return out


def end_to_end_seconds(hops: signals_pb2.Hops) -> float | None:
    return _span(hops, *END_TO_END)
