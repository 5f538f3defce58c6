"""Feed shard throughput: diff-depth messages per second per core into real Kafka, and memory.

Runs, in one go (every figure is CPU time, so other load on the machine slows it less than
wall time, though it still costs cache and hyperthread sharing; `uptime` is printed with it):
1. stages, in this process, over the recordings' diff-depth frames: decode + validate, book,
   encode, and the whole pure path (the Normalizer, no sockets, no Kafka) = the baseline;
   and websocket framing, the shard's splitter beside websockets' own parser;
2. produce only: the records that path emits, into a real local Kafka broker, per diff
   (this process's CPU, librdkafka's threads included), until every record is acknowledged;
3. the pure path and the producer together, in this process (no sockets);
4. the real thing: `quantcore replay --speed 0 --loop` serving only diff depth as fast as it
   can, a `quantcore feed` shard subscribed to it producing into the broker. The shard's rate
   is diffs decoded per CPU-second of the shard process (= per core), read from its /healthz
   and /proc; its memory is its RSS. The feeder's and the broker's CPU are shown beside it,
   and whether the shard was starved (idle for want of frames) or had its core.

    python -m bench.feed_throughput [--seconds 30]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.procstat import cpu_seconds, machine_cpu, rss_mib, thread_cpu_seconds
from bench.symbol_copies import write_copies
from quantcore.devservices.kafka import KafkaBroker
from quantcore.devservices.programs import ReplayProcess, ShardProcess, create_topics
from quantcore.events import Topics
from quantcore.feed import binance, codec
from quantcore.feed.book import BookSync, Step
from quantcore.feed.messages import DepthDiff, DepthSnapshot
from quantcore.feed.normalizer import Normalizer
from quantcore.feed.recording import Line, merged
from quantcore.feed.wsframes import FrameSplitter
from quantcore.localmode.source import default_recordings_dir
from quantcore.routing import Route, RoutingTable

DATA = default_recordings_dir()
FILES = [DATA / "btcusdt_20240808.gz", DATA / "ethusdt_20240808.gz"]
SYMBOLS = ("BTCUSDT", "ETHUSDT")
GOAL = 20_000  # diffs per second per core (issue 4)
# The shard's throughput setting (`quantcore feed --linger-ms`); its default, 5, favours latency.
LINGER_MS = 25
# A process using less of its core than this was waiting, not computing.
SATURATED = 0.85

Record = tuple[str, str | None, bytes]


def diff_lines() -> tuple[list[Line], int]:
    lines = [ln for ln in merged(*FILES) if ln.is_snapshot or b"@depth" in ln.frame[:40]]
    return lines, sum(not ln.is_snapshot for ln in lines)


def best_of(repeat: int, run: Callable[[], float], *, gc_off: bool = False) -> float:
    """The fastest of `repeat` runs. `gc_off` for a stage that keeps all its output (the next
    stage's input) alive: collecting that growing heap is this harness's cost, not the
    shard's (the pure path below runs with the collector on, as the shard does)."""
    gc.collect()
    if gc_off:
        gc.disable()
    try:
        return min(run() for _ in range(repeat))
    finally:
        gc.enable()


def stages(lines: list[Line], diffs: int, repeat: int = 5) -> dict[str, float]:
    """Microseconds per diff of each pure stage, and of the whole pure path, best of `repeat`."""
    frames = [ln for ln in lines if not ln.is_snapshot]

    def decode() -> float:
        start = time.process_time()
        for ln in frames:
            binance.decode_frame(ln.frame, ln.recv_ns)
        return time.process_time() - start

    messages: list[DepthDiff | DepthSnapshot] = []
    for ln in lines:
        if ln.is_snapshot:
            assert ln.symbol is not None
            snap = binance.decode_snapshot(ln.frame, ln.symbol, ln.recv_ns)
            assert isinstance(snap, DepthSnapshot)
            messages.append(snap)
        else:
            msg = binance.decode_frame(ln.frame, ln.recv_ns)
            assert isinstance(msg, DepthDiff)
            messages.append(msg)
    steps: list[tuple[str, Step]] = []

    def book() -> float:
        syncs = {s: BookSync(s) for s in SYMBOLS}
        out: list[tuple[str, Step]] = []
        start = time.process_time()
        for msg in messages:
            sync = syncs[msg.symbol]
            if type(msg) is DepthDiff:
                out.append((msg.symbol, sync.on_diff(msg)))
            else:
                out.append((msg.symbol, sync.on_snapshot(msg)))  # type: ignore[arg-type]
        elapsed = time.process_time() - start
        steps[:] = out
        return elapsed

    def encode() -> float:
        start = time.process_time()
        for ln in frames:
            codec.raw_line(ln.recv_ns, ln.frame)
        for symbol, step in steps:
            for update in step.updates:
                codec.book_record(update, symbol, 0.01, 0)
        return time.process_time() - start

    def pure() -> float:
        norm = Normalizer(binance, lambda kind, symbol, value: None)
        for s in SYMBOLS:
            norm.add_symbol(s)
        start = time.process_time()
        _feed(norm, lines)
        return time.process_time() - start

    us = 1e6 / diffs
    return {
        "decode": best_of(repeat, decode, gc_off=True) * us,
        "book": best_of(repeat, book, gc_off=True) * us,
        "encode": best_of(repeat, encode, gc_off=True) * us,
        "pure": best_of(repeat, pure) * us,
    }


def framing(lines: list[Line], repeat: int = 5) -> tuple[float, float]:
    """Microseconds per frame to take the diff frames off a websocket byte stream cut in
    64 KiB reads: the shard's `FrameSplitter`, and websockets' own parser beside it (its
    protocol's receive_data and events, which the splitter stands in for)."""
    from websockets.frames import Frame, Opcode
    from websockets.protocol import Protocol, Side, State

    frames = [ln.frame for ln in lines if not ln.is_snapshot]
    stream = b"".join(Frame(Opcode.TEXT, f).serialize(mask=False) for f in frames)
    reads = [stream[i : i + (64 << 10)] for i in range(0, len(stream), 64 << 10)]
    got: list[bytes] = []

    def splitter() -> float:
        got.clear()
        split = FrameSplitter(1 << 24, got.append, lambda other: None)
        start = time.process_time()
        for data in reads:
            split.feed(data)
        elapsed = time.process_time() - start
        assert got == frames
        return elapsed

    def websockets_parser() -> float:
        protocol = Protocol(Side.CLIENT, state=State.OPEN, max_size=1 << 24)  # after the handshake
        count = 0
        start = time.process_time()
        for data in reads:
            protocol.receive_data(data)
            count += len(protocol.events_received())
        elapsed = time.process_time() - start
        assert count == len(frames)
        return elapsed

    us = 1e6 / len(frames)
    return best_of(repeat, splitter) * us, best_of(repeat, websockets_parser) * us


def _feed(norm: Normalizer, lines: list[Line]) -> None:
    for ln in lines:
        if ln.is_snapshot:
            assert ln.symbol is not None
            norm.on_snapshot_body(ln.frame, ln.symbol, ln.recv_ns)
        else:
            norm.on_frame(ln.frame, ln.recv_ns)


def _producer(broker: KafkaBroker, prefix: str) -> object:
    """A FeedProducer whose idempotent producer id is already acquired (not on our clock)."""
    from quantcore.events import Topics
    from quantcore.feed.producer import FeedProducer

    producer = FeedProducer(
        broker.bootstrap,
        Topics.with_prefix(prefix),
        {"BTCUSDT": 1, "ETHUSDT": 2}.get,
        config={"linger.ms": LINGER_MS},
        kafka_auth=broker.auth("feed"),  # SASL_SSL, as a shard produces everywhere
    )
    producer.emit("raw", "BTCUSDT", b"warm-up")
    if producer.flush(60):
        raise RuntimeError("the broker did not acknowledge a warm-up record")
    return producer


def produce_only(
    broker: KafkaBroker, prefix: str, lines: list[Line], diffs: int, passes: int = 4
) -> float:
    """Microseconds of this process's CPU per diff to produce the records the pure path emits."""
    from quantcore.feed.producer import FeedProducer

    records: list[Record] = []
    norm = Normalizer(binance, lambda kind, symbol, value: records.append((kind, symbol, value)))
    for s in SYMBOLS:
        norm.add_symbol(s)
    _feed(norm, lines)
    producer = _producer(broker, prefix)
    assert isinstance(producer, FeedProducer)
    emit = producer.emit
    start = time.process_time()
    for _ in range(passes):
        for kind, symbol, value in records:
            emit(kind, symbol, value)
    if producer.flush(120):
        raise RuntimeError("records left unacknowledged")
    return (time.process_time() - start) / (diffs * passes) * 1e6


def in_process(
    broker: KafkaBroker, prefix: str, lines: list[Line], diffs: int, passes: int = 4
) -> tuple[float, float]:
    """Microseconds of CPU per diff: decode + book + encode + produce, no sockets; and how
    much of it librdkafka's own threads (batching, compression, network) spent."""
    from quantcore.feed.producer import FeedProducer

    producer = _producer(broker, prefix)
    assert isinstance(producer, FeedProducer)
    threads0 = thread_cpu_seconds()
    start = time.process_time()
    for _ in range(passes):
        norm = Normalizer(
            binance, producer.emit
        )  # a fresh sync per pass: the recording replays whole
        for s in SYMBOLS:
            norm.add_symbol(s)
        _feed(norm, lines)
    if producer.flush(120):
        raise RuntimeError("records left unacknowledged")
    elapsed = time.process_time() - start
    threads1 = thread_cpu_seconds()
    kafka = sum(t - threads0.get(k, 0.0) for k, t in threads1.items() if "rdk:" in k)
    us = 1e6 / (diffs * passes)
    return elapsed * us, kafka * us


def shard_run(
    broker: KafkaBroker, broker_pid: int, prefix: str, seconds: float, workdir: Path, copies: int
) -> dict[str, float]:
    # Every loop of the replay ends with a pause: the next starts once each symbol's
    # snapshot was asked for (replay.py), and the shard has drained its socket by then. Copies
    # of the recordings (`--copies`) make each loop longer, so that pause weighs less; but
    # the feeder and the broker then take more of the machine's two cores from the shard.
    files = write_copies(FILES, workdir / "recordings", copies)
    names = sorted(f.name.partition("_")[0].upper() for f in files)
    routing = workdir / "routing.json"
    table = RoutingTable.of(
        [Route(s, 0, i % 4) for i, s in enumerate(names)], partitions=4, shards=1, version=1
    )
    routing.write_text(table.to_json())
    with (
        ReplayProcess(files, workdir, speed=0, loop=True) as replay,
        ShardProcess(
            routing=routing, shard=0, kafka=broker.bootstrap, ws_url=replay.ws_url,
            rest_url=replay.rest_url, workdir=workdir, topic_prefix=prefix,
            kafka_auth=broker.auth("feed"),
            # Every loop of the replay (well under a second at full speed) resyncs each symbol.
            # At the default limit (1000 levels, weight 50) the shard's share of Binance's
            # weight budget allows about one snapshot a second and it would mostly wait for
            # it; at 100 (weight 5) it need not. The replay answers with the recording's own
            # 1000-level snapshot either way, so each resync is the same work.
            extra=["--no-trades", "--no-book-ticker", "--log-level", "WARNING",
                   "--snapshot-limit", "100", "--linger-ms", str(LINGER_MS)],
        ) as shard,
    ):  # fmt: skip
        # Warm up: every book live once.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            symbols = shard.health()["symbols"]
            if all(s["applied"] > 100 for s in symbols.values()) and len(symbols) == len(files):
                break
            time.sleep(0.2)
        pids = {"shard": shard.pid, "feeder": replay.pid, "broker": broker_pid}
        h0, t0 = shard.health(), time.monotonic()
        c0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        m0 = machine_cpu()
        sent0 = replay.status()["sent"]
        time.sleep(seconds)
        h1, t1 = shard.health(), time.monotonic()
        c1 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        m1 = machine_cpu()
        sent1 = replay.status()["sent"]
        rss, peak = rss_mib(shard.pid)
    wall = t1 - t0
    return {
        "diffs": h1["messages"].get("DepthDiff", 0) - h0["messages"].get("DepthDiff", 0),
        "applied": sum(s["applied"] for s in h1["symbols"].values())
        - sum(s["applied"] for s in h0["symbols"].values()),
        **{
            key: sum(s[key] for s in h1["symbols"].values())
            - sum(s[key] for s in h0["symbols"].values())
            for key in ("resyncs", "dropped", "stale_snapshots", "gaps")
        },
        "produced": h1["produced"] - h0["produced"],
        "failed": h1["delivery_failed"],
        "in_flight": h1["produced"] - h1["delivered"] - h1["delivery_failed"],
        "sent": sent1 - sent0,
        "wall_s": wall,
        "machine_busy": (m1[0] - m0[0]) / max(m1[1] - m0[1], 1),
        **{f"cpu_{name}": c1[name] - c0[name] for name in pids},
        "rss_mib": rss,
        "peak_rss_mib": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--copies", type=int, default=1, help="copies of each recording the shard serves"
    )
    args = parser.parse_args()
    print(f"load: {Path('/proc/loadavg').read_text().split()[:3]} on {os.cpu_count()} cores")
    print(f"producer linger.ms {LINGER_MS} (the shard's throughput setting; its default is 5)")
    lines, diffs = diff_lines()
    st = stages(lines, diffs)
    print(
        f"stages (us CPU per diff, {diffs} diffs): decode+validate {st['decode']:.1f}, "
        f"book {st['book']:.1f}, encode {st['encode']:.1f}"
    )
    split_us, websockets_us = framing(lines)
    print(
        f"websocket framing (us CPU per frame, 64 KiB reads): the shard's splitter {split_us:.2f}, "
        f"websockets' parser {websockets_us:.2f} (ratio {websockets_us / split_us:.1f})"
    )
    pure = 1e6 / st["pure"]
    print(
        f"baseline: pure decode+validate+book+encode: {st['pure']:.1f} us/diff = "
        f"{pure:,.0f} diffs/s per core"
    )
    with tempfile.TemporaryDirectory(prefix="feedbench-") as tmp:
        prefix = "bench"
        broker = KafkaBroker(Path(tmp) / "kafka", feeds=[Topics.with_prefix(prefix)])
        with broker:
            create_topics(broker.bootstrap, prefix, 4, broker.auth("operator"))
            produce = produce_only(broker, prefix, lines, diffs)
            print(
                f"produce only (2 records per diff, librdkafka threads included): {produce:.1f} us/diff"
            )
            both, kafka_threads = in_process(broker, prefix, lines, diffs)
            print(
                f"in-process into Kafka (no websocket): {both:.1f} us/diff = "
                f"{1e6 / both:,.0f} diffs/s per core, of which librdkafka's threads "
                f"{kafka_threads:.1f} (pure + produce only: {st['pure'] + produce:.1f})"
            )
            r = shard_run(broker, broker.pid, prefix, args.seconds, Path(tmp), args.copies)
    per_core = r["diffs"] / r["cpu_shard"] if r["cpu_shard"] else 0.0
    wall = r["wall_s"]
    use = {name: r[f"cpu_{name}"] / wall for name in ("shard", "feeder", "broker")}
    print(
        f"shard into Kafka ({len(FILES) * args.copies} symbols): {per_core:,.0f} diffs/s per core = {1e6 / per_core if per_core else 0:.1f} "
        f"us/diff ({r['diffs']:,.0f} diffs in {r['cpu_shard']:.1f} CPU-s; wall "
        f"{r['diffs'] / wall:,.0f}/s over {wall:.0f} s; {r['applied']:,.0f} applied = "
        f"{r['applied'] / max(r['diffs'], 1):.1%}, {r['dropped']:,.0f} dropped, {r['gaps']:.0f} gaps "
        f"(one per symbol per replay loop), {r['stale_snapshots']:.0f} stale snapshots; "
        f"{r['produced']:,.0f} records produced)"
    )
    print(
        "CPU use over the run: "
        + ", ".join(f"{name} {u:.0%}" for name, u in use.items())
        + f" of one core; feeder {1e6 * r['cpu_feeder'] / max(r['sent'], 1):.1f} us per frame sent"
    )
    print(f"machine: {r['machine_busy']:.0%} of all {os.cpu_count()} cores busy over the run")
    if use["shard"] < SATURATED:
        if use["feeder"] >= SATURATED:
            bound = "the feeder (it could not send faster)"
        elif r["machine_busy"] >= 0.9:
            bound = "CPU contention (the machine was busy: other processes took the cores)"
        else:
            bound = "waiting for frames (at each loop boundary the feeder waits for the snapshot request)"
        print(
            f"NOTE: the shard used {use['shard']:.0%} of a core, held back by {bound}; "
            "below saturation per-frame overheads (a socket read and a loop wake-up each) weigh "
            "more, and contention slows the CPU time itself (caches), so a saturated shard on a "
            "quiet machine likely does better than this per-core figure"
        )
    print(
        f"shard / baseline: {per_core / pure:.2f}; shard / goal: {per_core / GOAL:.2f} "
        f"(goal >= {GOAL:,} diffs/s per core)"
    )
    print(f"shard memory: RSS {r['rss_mib']:.0f} MiB, peak {r['peak_rss_mib']:.0f} MiB")
    print(
        f"kafka: {r['failed']:.0f} delivery failures, {r['in_flight']:.0f} records in flight at the end"
    )


if __name__ == "__main__":
    main()
