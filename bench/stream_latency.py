"""Kafka-in to Redis-publish latency of `quantcore stream` per trigger mode, one run.

For each trigger mode (real-time, continuous, micro-batch) the job runs as it does under
`quantcore up` (a `quantcore stream` subprocess: Spark queries -> signals topic -> relay ->
Redis) against one local Kafka and Redis. The bench produces synthetic 20-level book records
at fixed rates, stamping each with its send time, and a Redis subscriber measures send ->
PUBLISH-received latency, split at the hops the update carries (Kafka append of the input,
the signals record's timestamp). It prints the modes side by side: p50/p99 per rate, the
highest rate whose p99 stays under 250 ms, the micro-batch / real-time ratio, and the cores
the job used in each window.

A fresh job is slow for its first minutes (the JVMs compile Spark's generated code), so each
mode first runs `--warmup` seconds at the first rate, reported in 30 s windows. Real-time mode
then runs one whole real-time batch at that rate, so the pause between two batches is in
its figures (continuous mode runs a window as long); the rates are measured after that.

    python -m bench.stream_latency [--seconds 20] [--rates 300,1000,3000] [--warmup 150]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bench.procstat import process_tree_cpu
from quantcore import kafkaacl
from quantcore.devservices.kafka import KafkaBroker
from quantcore.devservices.programs import child_env
from quantcore.devservices.redis import RedisServer
from quantcore.devservices.spark import spark_jars
from quantcore.events import Topics, signals_topic
from quantcore.redisacl import RELAY
from quantcore.stream.job import StreamConfig
from tests.integration.updatelistener import UpdateListener

SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT")
P99_BOUND_MS = 250.0
WARMUP_WINDOW_S = 30.0
NAN = float("nan")


def book_record(symbol: str, seq: int, now_ns: int) -> bytes:
    shift = (seq % 7) * 0.01
    return json.dumps(
        {
            "symbol": symbol,
            "seq": seq,
            "first_seq": seq,
            "event_time_ms": now_ns // 1_000_000,
            "recv_time_ns": now_ns,
            "publish_time_ns": now_ns,
            "tick_size": 0.01,
            "bid_px": [100.0 + shift - 0.01 * k for k in range(20)],
            "bid_qty": [1.0 + (seq + k) % 5 for k in range(20)],
            "ask_px": [100.01 + shift + 0.01 * k for k in range(20)],
            "ask_qty": [2.0 + (seq * k) % 3 for k in range(20)],
            "prev_bid_px": 100.0,
            "prev_bid_qty": 1.0,
            "prev_ask_px": 100.01,
            "prev_ask_qty": 2.0,
        }
    ).encode()


class Latencies(UpdateListener):
    """Book updates' latency as this process receives them from Redis pub/sub."""

    def __init__(self, url: str) -> None:
        super().__init__(url, poll_s=0.2)

    def dump(self, path: Path, trigger: str) -> None:
        """Every book update's hops, a JSON line each, to look at how the tail is spread."""
        with path.open("a") as out:
            for now, u in self.received:
                if u.WhichOneof("body") == "book":
                    h = u.hops
                    out.write(json.dumps({"trigger": trigger, "seq": u.sequence, "recv_ns": now,
                                          "send_ns": h.feed_publish_ns,
                                          "append_ns": h.kafka_append_ns,
                                          "signals_ns": h.stream_compute_ns,
                                          "redis_write_ns": h.sink_write_ns}) + "\n")  # fmt: skip

    @property
    def samples(self) -> list[tuple[int, float, float, float]]:
        """(seq, send->recv ms, input append->signals record ms, signals record->recv ms) of
        every book update so far (the signals record's timestamp has ms resolution)."""
        return [
            (
                u.sequence,
                (now - u.hops.feed_publish_ns) / 1e6,
                (u.hops.stream_compute_ns - u.hops.kafka_append_ns) / 1e6,
                (now - u.hops.stream_compute_ns) / 1e6,
            )
            for now, u in self.received
            if u.WhichOneof("body") == "book"
        ]


def drain(
    lat: Latencies, first: int, last: int, idle_s: float
) -> list[tuple[int, float, float, float]]:
    """The samples of sequences first..last, waiting while they still arrive (a lagging job
    shows as high latency, not as lost updates)."""
    count, idle_since = -1, time.monotonic()
    while True:
        window = [s for s in lat.samples if first <= s[0] <= last]
        if len(window) >= last - first + 1:
            return window
        if len(window) != count:
            count, idle_since = len(window), time.monotonic()
        elif time.monotonic() - idle_since > idle_s:
            return window
        time.sleep(0.5)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_mode(
    trigger: str, broker: KafkaBroker, redis: RedisServer, jars: str, work: Path, args
) -> dict:
    redis_url = redis.url  # admin: this process's subscriber; the job runs as the relay
    kafka = broker.bootstrap
    tag = f"{trigger}-{int(time.time())}"
    feed = Topics.with_prefix(tag)
    book, trades = feed.book, feed.trades
    broker.grant(feed)  # SASL_SSL as everywhere: the job as `stream`, this producer as `feed`
    admin = AdminClient(broker.client_config(kafkaacl.ADMIN))
    topics = (book, trades, feed.flow, signals_topic(book))
    for fut in admin.create_topics([NewTopic(t, 2, 1) for t in topics]).values():
        fut.result(30)
    log = work / f"stream-{trigger}.log"
    job = subprocess.Popen(
        [sys.executable, "-m", "quantcore.cli", "stream", "--kafka", kafka, "--redis", redis.address,
         "--checkpoint", str(work / f"ck-{tag}"), "--trigger", trigger, "--book-topic", book,
         "--trades-topic", trades, "--flow-topic", feed.flow, "--jars", jars,
         "--realtime-batch", args.realtime_batch, "--starting-offsets", "latest"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env=child_env(redis.auth(RELAY), kafka=broker.auth(kafkaacl.STREAM)),
    )  # fmt: skip
    lat = Latencies(redis_url)
    producer = Producer({**broker.client_config(kafkaacl.FEED), "linger.ms": 0, "acks": "1"})
    seq = [0]

    def send(rate: float, seconds: float) -> tuple[int, int]:
        first = seq[0] + 1
        start = time.monotonic()
        n = int(rate * seconds)
        for i in range(n):
            target = start + i / rate
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            seq[0] += 1
            k = seq[0] % len(SYMBOLS)
            # Symbols of this mode's own: the modes share one Redis, whose compare-and-set
            # would refuse the second mode's updates as older than the first one's.
            symbol = f"{trigger[:2].upper()}{SYMBOLS[k]}"
            producer.produce(book, book_record(symbol, seq[0], time.time_ns()), symbol,
                             partition=k % 2)  # fmt: skip
            producer.poll(0)
        producer.flush(10)
        return first, seq[0]

    result: dict = {"trigger": trigger, "steps": [], "warmup": []}
    try:
        # Warm up until the job answers (JVM start, query planning, first batch).
        deadline = time.monotonic() + args.startup_timeout
        while not lat.samples and time.monotonic() < deadline and job.poll() is None:
            send(20, 1.0)
        if not lat.samples:
            result["error"] = f"no update within {args.startup_timeout:.0f}s (log: {log})"
            return result
        send(100, 3.0)  # settle

        def measure(rate: float, seconds: float, label: str) -> dict:
            cpu0, t0 = sum(process_tree_cpu(job.pid).values()), time.monotonic()
            first, last = send(rate, seconds)
            # The job's cores (Spark JVM and relay) while the rate was sent.
            cores = (sum(process_tree_cpu(job.pid).values()) - cpu0) / (time.monotonic() - t0)
            window = drain(lat, first, last, args.drain_seconds)
            sent = last - first + 1
            row = {"rate": rate, "sent": sent, "received": len(window),
                   "load": os.getloadavg()[0], "cores": cores}  # fmt: skip
            if window:
                e2e = [s[1] for s in window]
                row.update(p50=percentile(e2e, 0.5), p99=percentile(e2e, 0.99),
                           p999=percentile(e2e, 0.999), max=max(e2e),
                           spark_p50=percentile([s[2] for s in window], 0.5),
                           relay_p50=percentile([s[3] for s in window], 0.5))  # fmt: skip
            print(f"  {trigger:10s} {label:>10s} {rate:6.0f}/s sent {sent} received {len(window)} "
                  f"p50 {row.get('p50', NAN):8.1f} ms p99 {row.get('p99', NAN):8.1f} ms "
                  f"(input append->signals p50 {row.get('spark_p50', NAN):.1f} ms, "
                  f"signals->Redis p50 {row.get('relay_p50', NAN):.1f} ms) job {cores:.2f} cores "
                  f"load {row['load']:.1f}",
                  flush=True)  # fmt: skip
            return row

        # The JVMs compile Spark's generated code and Kafka's hot paths for the first minutes
        # (C2 alone took half a core): measured in windows, so what a fresh start costs shows
        # beside the steady state the rates below are measured in.
        windows = int(args.warmup // WARMUP_WINDOW_S)
        for w in range(windows):
            label = f"warm {w * WARMUP_WINDOW_S:.0f}s+"
            result["warmup"].append(measure(args.rates[0], WARMUP_WINDOW_S, label))
        if trigger != "microbatch":
            # One whole real-time batch, so exactly one batch transition (tasks stop, offsets
            # commit, the next batch is planned and started) is among the samples; continuous
            # mode gets a window as long, with every epoch commit in it.
            cycle = measure(args.rates[0], duration_s(args.realtime_batch), "one batch")
            result["cycle"] = cycle
            print(f"  {trigger:10s} {'one batch':>10s} p99.9 {cycle.get('p999', NAN):.1f} ms "
                  f"max {cycle.get('max', NAN):.1f} ms", flush=True)  # fmt: skip
        for rate in args.rates:
            result["steps"].append(measure(rate, args.seconds, "steady"))
    finally:
        if args.dump:
            lat.dump(args.dump, trigger)
        lat.close(timeout=2)
        job.send_signal(signal.SIGTERM)
        try:
            job.wait(60)
        except subprocess.TimeoutExpired:
            job.kill()
            job.wait(10)
    return result


def duration_s(text: str) -> float:
    """A Spark interval such as "5 minutes" or "30 seconds", in seconds."""
    number, unit = text.split()
    return float(number) * (60.0 if unit.startswith("minute") else 1.0)


def sustained(result: dict) -> float:
    ok = [s["rate"] for s in result["steps"]
          if s.get("p99", float("inf")) < P99_BOUND_MS and s["received"] >= 0.99 * s["sent"]]  # fmt: skip
    return max(ok, default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rates", default="300,1000,3000")
    parser.add_argument("--modes", default="realtime,continuous,microbatch")
    parser.add_argument("--startup-timeout", type=float, default=240.0)
    parser.add_argument(
        "--drain-seconds", type=float, default=20.0, help="give up after no progress"
    )
    parser.add_argument(
        "--warmup", type=float, default=150.0,
        help="seconds at the first rate, reported in 30 s windows, before the measured rates",
    )  # fmt: skip
    parser.add_argument(
        "--realtime-batch",
        default=StreamConfig.realtime_batch,
        help="the job's --realtime-batch (checkpoint interval)",
    )
    parser.add_argument("--dump", type=Path, help="append every update's hops to this file")
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    jars = ",".join(str(j) for j in spark_jars())
    with tempfile.TemporaryDirectory(prefix="qc-bench-stream-") as tmp:
        work = Path(tmp)
        redis = RedisServer(work / "redis")
        broker = KafkaBroker(work / "kafka")
        with broker, redis:
            results = {
                m: run_mode(m, broker, redis, jars, work, args) for m in args.modes.split(",")
            }
            for r in results.values():
                if "error" in r:
                    print(f"  {r['trigger']}: {r['error']}")
                    print((work / f"stream-{r['trigger']}.log").read_text(errors="replace")[-2000:])
    print(f"\nKafka-in -> Redis PUBLISH latency, ms (uptime: {load_average()})")
    modes = list(results)
    print(f"{'':24s}" + "".join(f"{m:>14s}" for m in modes) + "  ratio mb/rt")
    for rate in args.rates:
        for q in ("p50", "p99"):
            values = [step_at(results[m], rate).get(q) for m in modes]
            print(f"{q + ' at ' + f'{rate:.0f}/s':24s}" + "".join(f"{fmt(v):>14s}" for v in values)
                  + f"  {ratio(results, rate, q)}")  # fmt: skip
    for w in range(max(len(r["warmup"]) for r in results.values())):
        for q in ("p50", "p99"):
            values = [r["warmup"][w].get(q) if w < len(r["warmup"]) else None
                      for r in results.values()]  # fmt: skip
            label = f"{q} warm-up {w * WARMUP_WINDOW_S:.0f}-{(w + 1) * WARMUP_WINDOW_S:.0f}s"
            print(f"{label:24s}" + "".join(f"{fmt(v):>14s}" for v in values))
    for mode, what in (("realtime", "its transition included"),
                       ("continuous", "every epoch commit in it")):  # fmt: skip
        cycle = results.get(mode, {}).get("cycle")
        if cycle:
            print(f"{mode}, one whole {args.realtime_batch} window at {args.rates[0]:.0f}/s ({what}): "
                  f"p50 {fmt(cycle.get('p50'))} p99 {fmt(cycle.get('p99'))} "
                  f"p99.9 {fmt(cycle.get('p999'))} max {fmt(cycle.get('max'))} ms")  # fmt: skip
    print(f"{'sustained, p99<250 ms':24s}"
          + "".join(f"{sustained(results[m]):>12.0f}/s" for m in modes))  # fmt: skip


def step_at(result: dict, rate: float) -> dict:
    return next((s for s in result["steps"] if s["rate"] == rate), {})


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def ratio(results: dict, rate: float, q: str) -> str:
    rt = step_at(results.get("realtime", {"steps": []}), rate).get(q)
    mb = step_at(results.get("microbatch", {"steps": []}), rate).get(q)
    return f"x{mb / rt:.1f}" if rt and mb else "-"


def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
