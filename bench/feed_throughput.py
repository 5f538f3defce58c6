"""Feed shard throughput: diff-depth messages per second per core into real Kafka, and memory.

Runs, in one go:
1. baseline: the pure decode + validate + book + encode path (no sockets, no Kafka) over the
   recordings' diff-depth frames, in this process;
2. the same path producing into a real local Kafka broker, in this process (no sockets);
3. the real thing: `quantcore replay --speed 0 --loop` serving only diff depth as fast as it can,
   a `quantcore feed` shard subscribed to it producing into a real local Kafka broker. The
   shard's rate is diffs decoded per CPU-second of the shard process (= per core), read from its
   /healthz and /proc; its memory is its RSS.

    python -m bench.feed_throughput [--seconds 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from quantcore.feed.normalizer import Normalizer
from quantcore.feed.processes import ReplayProcess, ShardProcess, create_topics
from quantcore.feed.recording import merged
from quantcore.localmode.source import default_recordings_dir
from quantcore.routing import Route, RoutingTable

DATA = default_recordings_dir()
FILES = [DATA / "btcusdt_20240808.gz", DATA / "ethusdt_20240808.gz"]
TICKS = 100  # /proc clock ticks per second (USER_HZ)


def baseline(repeat: int = 3) -> tuple[float, int]:
    """Pure diffs/s (CPU time) over the diff-depth frames + snapshots, best of `repeat`."""
    lines = [ln for ln in merged(*FILES) if ln.is_snapshot or b"@depth" in ln.frame[:40]]
    diffs = sum(not ln.is_snapshot for ln in lines)
    best = 0.0
    for _ in range(repeat):
        sink: list[int] = [0]

        def emit(kind: str, symbol: str | None, value: bytes, sink: list[int] = sink) -> None:
            sink[0] += 1

        norm = Normalizer(emit)
        for s in ("BTCUSDT", "ETHUSDT"):
            norm.add_symbol(s)
        start = time.process_time()
        for ln in lines:
            if ln.is_snapshot:
                assert ln.symbol is not None
                norm.on_snapshot_body(ln.frame, ln.symbol, ln.recv_ns)
            else:
                norm.on_frame(ln.frame, ln.recv_ns)
        best = max(best, diffs / (time.process_time() - start))
    return best, diffs


def in_process_kafka(bootstrap: str, prefix: str, passes: int = 4) -> tuple[float, int, int]:
    """Decode + book + encode + produce into real Kafka, no sockets: diffs per CPU-second
    (this process, including librdkafka's threads), until every record is acknowledged."""
    from quantcore.feed.producer import FeedProducer, Topics

    lines = [ln for ln in merged(*FILES) if ln.is_snapshot or b"@depth" in ln.frame[:40]]
    diffs = sum(not ln.is_snapshot for ln in lines)
    producer = FeedProducer(bootstrap, Topics.with_prefix(prefix), {"BTCUSDT": 1, "ETHUSDT": 2}.get)
    start = time.process_time()
    for _ in range(passes):
        norm = Normalizer(producer.emit)  # a fresh sync per pass: the recording replays whole
        for s in ("BTCUSDT", "ETHUSDT"):
            norm.add_symbol(s)
        for ln in lines:
            if ln.is_snapshot:
                assert ln.symbol is not None
                norm.on_snapshot_body(ln.frame, ln.symbol, ln.recv_ns)
            else:
                norm.on_frame(ln.frame, ln.recv_ns)
    remaining = producer.flush(120)
    cpu = time.process_time() - start
    return diffs * passes / cpu, producer.delivered, remaining


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mib(pid: int) -> tuple[float, float]:
    status = dict(
        line.split(":", 1)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":" in line
    )
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def shard_run(seconds: float, workdir: Path) -> dict[str, float]:
    from quantcore.devservices.kafka import KafkaBroker

    with KafkaBroker(workdir / "kafka") as bootstrap:
        prefix = "bench"
        create_topics(bootstrap, prefix, 4)
        inproc, delivered, remaining = in_process_kafka(bootstrap, prefix)
        print(
            f"in-process into Kafka (no websocket): {inproc:,.0f} diffs/s per core "
            f"({delivered:,} records acknowledged, {remaining} left)",
            flush=True,
        )
        routing = workdir / "routing.json"
        table = RoutingTable.of(
            [Route("BTCUSDT", 0, 1), Route("ETHUSDT", 0, 2)], partitions=4, shards=1, version=1
        )
        routing.write_text(table.to_json())
        with (
            ReplayProcess(FILES, workdir, speed=0, loop=True) as replay,
            ShardProcess(
                routing=routing, shard=0, kafka=bootstrap, ws_url=replay.ws_url,
                rest_url=replay.rest_url, workdir=workdir, topic_prefix=prefix,
                extra=["--no-trades", "--no-book-ticker", "--log-level", "WARNING"],
            ) as shard,
        ):  # fmt: skip
            # Warm up: both books live once.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                symbols = shard.health()["symbols"]
                if all(s["applied"] > 100 for s in symbols.values()) and len(symbols) == 2:
                    break
                time.sleep(0.2)
            h0, c0, t0 = shard.health(), cpu_seconds(shard.pid), time.monotonic()
            time.sleep(seconds)
            h1, c1, t1 = shard.health(), cpu_seconds(shard.pid), time.monotonic()
            rss, peak = rss_mib(shard.pid)
            msgs = h1["messages"].get("DepthDiff", 0) - h0["messages"].get("DepthDiff", 0)
            applied = sum(s["applied"] for s in h1["symbols"].values()) - sum(
                s["applied"] for s in h0["symbols"].values()
            )
            produced = h1["produced"] - h0["produced"]
            # Let the producer drain, then check nothing failed.
            time.sleep(3)
            h2 = shard.health()
    return {
        "diffs": msgs,
        "applied": applied,
        "produced": produced,
        "cpu_s": c1 - c0,
        "wall_s": t1 - t0,
        "rss_mib": rss,
        "peak_rss_mib": peak,
        "failed": h2["delivery_failed"],
        "unacked": h2["produced"] - h2["delivered"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    pure, diffs = baseline()
    print(
        f"baseline: pure decode+validate+book+encode: {pure:,.0f} diffs/s per core ({diffs} diffs)"
    )
    with tempfile.TemporaryDirectory(prefix="feedbench-") as tmp:
        r = shard_run(args.seconds, Path(tmp))
    per_core = r["diffs"] / r["cpu_s"] if r["cpu_s"] else 0.0
    print(
        f"shard into Kafka: {per_core:,.0f} diffs/s per core "
        f"({r['diffs']:,.0f} diffs in {r['cpu_s']:.1f} CPU-s; wall {r['diffs'] / r['wall_s']:,.0f}/s "
        f"over {r['wall_s']:.0f} s; {r['applied']:,.0f} applied; {r['produced']:,.0f} records produced)"
    )
    print(f"shard / baseline: {per_core / pure:.2f}  (goal >= 20,000 diffs/s per core)")
    print(f"shard memory: RSS {r['rss_mib']:.0f} MiB, peak {r['peak_rss_mib']:.0f} MiB")
    print(
        f"kafka: {r['failed']:.0f} delivery failures, {r['unacked']:.0f} unacknowledged after drain"
    )


if __name__ == "__main__":
    main()
