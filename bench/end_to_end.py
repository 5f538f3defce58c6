"""End-to-end latency, feed receive -> client receive, decomposed per hop, beside a baseline
server that polls Redis every 500 ms (as the seed project first did), in the same run.

    python -m bench.end_to_end [--source up|synthetic] [--seconds 30]

--source up (default): `quantcore up --source replay` (Kafka, Redis, replay, feed shards, the
Spark job, the server) on copies of the two recordings under other names (bench.symbol_copies),
--symbols of them (30), each at the recorded 10 Hz of depth diffs plus its trades.
--source synthetic: no feed or Spark; a writer stamps feed_receive_ns and writes 30 symbols x
10 Hz with the sink's layout, so only sink -> Redis -> server -> client is real.

--lake both (up): the lake's cost on the live path: the pipeline without and with the lake,
alternated --rounds times in one run, and each p99's ratio with it to without.

Both servers (ours: pub/sub push; baseline: 500 ms poll) read the same Redis; one client
per server subscribes to every symbol; figures come from the hop stamps in each update.
Goal: p99 <= 50 ms end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from bench.procstat import cpu_seconds, machine_cpu, process_tree_cpu
from bench.symbol_copies import write_copies
from quantcore.client.security import ClientCredentials
from quantcore.client.stream import flatten
from quantcore.devservices.programs import ServeProcess
from quantcore.stream.job import TRIGGERS
from quantcore.v1 import marketdata_pb2, marketdata_pb2_grpc, signals_pb2

ROOT = Path(__file__).parents[1]
HOPS = (
    ("feed_receive_ns", "feed_publish_ns", "feed: receive -> producer"),
    ("feed_publish_ns", "kafka_append_ns", "Kafka append"),
    # stream_compute_ns is the signals record's Kafka timestamp (ms): Spark's output hop.
    ("kafka_append_ns", "stream_compute_ns", "Spark: input -> signals topic"),
    ("stream_compute_ns", "sink_write_ns", "relay: signals topic -> Redis"),
    ("sink_write_ns", "server_receive_ns", "Redis write -> server has it"),
    ("server_receive_ns", "server_send_ns", "server: queue -> write"),
    ("server_send_ns", "client_ns", "gRPC -> client"),
)
READY = re.compile(r"READY .* grpc (\S+), kafka (\S+), redis (\S+)")
ATTACH = re.compile(r"--ca (\S+) --token-file (\S+)\)")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class PollingServer:
    """The baseline: Subscribe answers by reading Redis every `period_s`, no pub/sub."""

    def __init__(self, redis_url: str, period_s: float = 0.5) -> None:
        import redis.asyncio as aioredis

        self.redis = aioredis.Redis.from_url(redis_url)
        self.period_s = period_s
        self.server = grpc.aio.server()
        self.port = 0

    async def subscribe(
        self, request: marketdata_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        from quantcore.serve.encoding import batch, stamped
        from quantcore.serve.server import ServerConfig, selection
        from quantcore.serve.snapshot import read_latest

        seen: dict[tuple[str, str], int] = {}
        # The kinds asked for, read as the real server reads them (none: every kind).
        _, kinds = selection(request.symbols, request.kinds, ServerConfig.max_symbols_per_request)
        while True:
            fresh = []
            for update in await read_latest(self.redis, request.symbols, kinds):
                if update.sequence > seen.get(update.key, -1):
                    seen[update.key] = update.sequence
                    fresh.append(stamped(update.payload, update.server_receive_ns, time.time_ns()))
            if fresh:
                yield batch(fresh)
            await asyncio.sleep(self.period_s)

    async def start(self) -> str:
        handler = grpc.method_handlers_generic_handler(
            "quantcore.v1.MarketData",
            {
                "Subscribe": grpc.unary_stream_rpc_method_handler(
                    self.subscribe,
                    request_deserializer=marketdata_pb2.SubscribeRequest.FromString,
                    response_serializer=None,
                )
            },
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.server.stop(0.5)
        await self.redis.aclose()


async def measure(
    target: str,
    symbols: list[str],
    seconds: float,
    kind: str = "book",
    creds: ClientCredentials | None = None,
) -> list[tuple[signals_pb2.SignalUpdate, int]]:
    out: list[tuple[signals_pb2.SignalUpdate, int]] = []
    creds = creds or ClientCredentials()
    async with creds.channel(target) as channel:
        call = marketdata_pb2_grpc.MarketDataStub(channel).Subscribe(
            marketdata_pb2.SubscribeRequest(symbols=symbols, kinds=[kind]),
            metadata=creds.metadata(),
        )
        snapshot_pending = set(symbols)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for update in flatten(call):
                    now = time.time_ns()
                    # The first value per symbol is the snapshot, old by design: not a latency.
                    if update.symbol in snapshot_pending:
                        snapshot_pending.discard(update.symbol)
                        continue
                    out.append((update, now))
        call.cancel()
    return out


def report(
    name: str, samples: list[tuple[signals_pb2.SignalUpdate, int]], kind: str = "book"
) -> float:
    """Prints the samples' latencies; returns the end-to-end p99 (ms; nan without samples)."""
    live = [(u, t) for u, t in samples if u.hops.feed_receive_ns]
    print(f"{name}: {len(live)} {kind} updates")
    if not live:
        return float("nan")
    total = [(t - u.hops.feed_receive_ns) / 1e6 for u, t in live]
    print(
        f"  end to end (feed receive -> client)   p50 {pct(total, 0.5):7.1f} ms"
        f"  p99 {pct(total, 0.99):7.1f} ms  p99.9 {pct(total, 0.999):7.1f} ms"
        f"  max {max(total):7.1f} ms"
    )
    for start, end, label in HOPS:
        deltas = []
        for u, t in live:
            a = getattr(u.hops, start)
            b = t if end == "client_ns" else getattr(u.hops, end)
            if a and b:
                deltas.append((b - a) / 1e6)
        if deltas:
            print(f"    {label:34} p50 {pct(deltas, 0.5):7.1f} ms  p99 {pct(deltas, 0.99):7.1f} ms")
    return pct(total, 0.99)


def visibility(
    samples: list[tuple[signals_pb2.SignalUpdate, int]], written: dict[str, list[tuple[int, int]]]
) -> list[float]:
    """Per write: ms until the client held that value or a newer one (skipped values count
    as seen when their successor arrives: that is what a reader of "the latest" experiences)."""
    seen: dict[str, list[tuple[int, int]]] = {}
    for u, t in samples:
        seen.setdefault(u.symbol, []).append((u.sequence, t))
    out = []
    for symbol, writes in written.items():
        arrivals = seen.get(symbol, [])
        if not arrivals:
            continue
        first_seq = arrivals[0][0]
        i = 0
        for seq, write_ns in writes:
            if seq < first_seq or seq > arrivals[-1][0]:
                continue  # before the client joined, or after it left
            while arrivals[i][0] < seq:
                i += 1
            out.append((arrivals[i][1] - write_ns) / 1e6)
    return out


async def compare(
    target: str,
    redis_url: str,
    symbols: list[str],
    seconds: float,
    written: dict[str, list[tuple[int, int]]] | None = None,
    creds: ClientCredentials | None = None,
) -> dict[str, float]:
    """Prints each client's latencies; returns the push clients' end-to-end p99s."""
    baseline = PollingServer(redis_url)
    baseline_target = await baseline.start()
    try:
        ours, polled, flow = await asyncio.gather(
            measure(target, symbols, seconds, creds=creds),
            measure(baseline_target, symbols, seconds),
            # Trade flow beside the books, same run: the shards' windows, projected by the
            # job's real-time trade-flow query (feed receive: the trade frame's, or when a
            # decay tick was emitted).
            measure(target, symbols, seconds, kind="trades", creds=creds),
        )
    finally:
        await baseline.stop()
    p99 = {"trade flow p99": report("trade flow (push, kind trades)", flow, kind="trade-flow")}
    for name, samples in (
        ("push (quantcore serve: one pub/sub subscription, conflating queues)", ours),
        ("baseline (polls Redis every 500 ms)", polled),
    ):
        p99.setdefault("book p99", report(name, samples))
        if written:
            v = visibility(samples, written)
            print(
                f"  write -> client holds it or newer ({len(v)} writes)"
                f"  p50 {pct(v, 0.5):7.1f} ms  p99 {pct(v, 0.99):7.1f} ms"
            )
    return p99


# --- synthetic source ---------------------------------------------------------------------


async def synthetic_writer(
    redis_url: str,
    symbols: list[str],
    rate: float,
    stop: asyncio.Event,
    written: dict[str, list[tuple[int, int]]],
) -> None:
    import redis.asyncio as aioredis

    from quantcore import signalstore

    client = aioredis.Redis.from_url(redis_url)
    script = client.register_script(signalstore.CAS_SCRIPT)  # the sink's own write
    seq = int(time.time() * 1000)
    period = 1.0 / rate
    next_tick = time.monotonic()
    # Spread the symbols over the period, as independent markets would be.
    offsets = sorted(random.random() * period for _ in symbols)
    try:
        while not stop.is_set():
            seq += 1
            for symbol, offset in zip(symbols, offsets, strict=True):
                await asyncio.sleep(max(0.0, next_tick + offset - time.monotonic()))
                now = time.time_ns()
                update = signals_pb2.SignalUpdate(
                    symbol=symbol,
                    sequence=seq,
                    hops=signals_pb2.Hops(feed_receive_ns=now, sink_write_ns=now),
                    book=signals_pb2.BookSignals(mid=100.0),
                )
                written.setdefault(symbol, []).append((seq, now))
                await script(
                    keys=[signalstore.state_key(symbol), signalstore.SYMBOLS_KEY],
                    args=[
                        "book",
                        str(seq),
                        update.SerializeToString(),
                        symbol,
                        signalstore.channel(symbol),
                    ],
                )
            next_tick += period
    finally:
        await client.aclose()


def run_synthetic(args: argparse.Namespace) -> None:
    from quantcore.devservices.ports import free_port
    from quantcore.devservices.redis import RedisServer
    from quantcore.redisacl import SERVE

    symbols = [f"S{i:03d}USDT" for i in range(args.symbols)]
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        redis = RedisServer(Path(tmp) / "redis")
        redis_url = redis.start()  # admin: the synthetic writer and the baseline's reads
        server = ServeProcess(
            redis.address, free_port(), Path(tmp) / "serve.log", redis_auth=redis.auth(SERVE)
        )
        try:
            server.start()
            server.wait_started()
            port = server.port

            async def main() -> None:
                stop = asyncio.Event()
                written: dict[str, list[tuple[int, int]]] = {}
                writer = asyncio.create_task(
                    synthetic_writer(redis_url, symbols, args.rate, stop, written)
                )
                await asyncio.sleep(1.0)
                await compare(f"127.0.0.1:{port}", redis_url, symbols, args.seconds, written)
                stop.set()
                await writer

            print(
                f"synthetic source: {len(symbols)} symbols x {args.rate:g} Hz; hops before the "
                "sink are not exercised (feed_receive_ns is stamped at the sink write)"
            )
            asyncio.run(main())
        finally:
            # SIGTERM, then SIGKILL if it has not drained and exited within 30 s.
            server.stop(timeout=30)
            redis.stop()


def run_up(args: argparse.Namespace, lake: str) -> dict[str, float]:
    """One `quantcore up` measured; returns its p99s and the machine's busy cores."""
    from quantcore.devservices.redis import credential_url, stored_auth
    from quantcore.localmode.source import default_recordings_dir, recordings_in
    from quantcore.redisacl import SERVE
    from quantcore.redisauth import is_tls

    with tempfile.TemporaryDirectory(prefix="bench-e2e-up-") as tmp:
        sources = list(recordings_in(default_recordings_dir(), None))
        copies = -(-args.symbols // len(sources))  # ceil: at least --symbols symbols
        recordings = Path(tmp) / "recordings"
        write_copies(sources, recordings, copies)
        symbols = copies * len(sources)
        argv = [
            sys.executable,
            "-m",
            "quantcore.cli",
            "up",
            "--source",
            "replay",
            "--recordings",
            str(recordings),
            # Two shards (one per core) rather than a process per symbol.
            "--symbols-per-shard",
            str(-(-symbols // 2)),
            "--no-view",
            "--port",
            "0",
            "--dir",
            str(Path(tmp) / "up"),
            "--trigger",
            args.trigger,
            "--prometheus",
            args.prometheus,
            *(["--no-lake"] if lake == "off" else []),
        ]
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        try:
            match = None
            for line in proc.stdout:
                print("  | " + line.rstrip())
                if match := READY.search(line):
                    break
            if match is None:
                raise SystemExit("quantcore up ended before it was ready")
            target, redis_url = match.group(1).rstrip(","), match.group(3).rstrip(",")
            if is_tls(redis_url):
                # The baseline reads as the serving tier, with the password `up` generated.
                auth = stored_auth(Path(tmp) / "up" / "redis", SERVE)
                redis_url = credential_url(redis_url, auth)
            symbols = re.search(r"symbols ([A-Z0-9 ]+), grpc", line)
            names = symbols.group(1).split() if symbols else ["BTCUSDT", "ETHUSDT"]
            # `up` serves TLS with a token by default; its READY line names both files.
            attach = ATTACH.search(line)
            creds = (
                ClientCredentials(
                    ca=Path(attach.group(1)), token=Path(attach.group(2)).read_text().strip()
                )
                if attach
                else ClientCredentials()
            )
            print(f"ready; letting the pipeline run {args.warmup:g} s before measuring")
            time.sleep(args.warmup)
            print(
                f"full pipeline from replay: {len(names)} symbols ({' '.join(names)}), "
                f"depth diffs at 10 Hz, trigger {args.trigger}"
            )
            before, busy_before = pipeline_cpu(proc.pid), machine_cpu()
            start = time.monotonic()
            figures = asyncio.run(compare(target, redis_url, names, args.seconds, creds=creds))
            figures["busy cores"] = cpu_report(
                before, busy_before, proc.pid, time.monotonic() - start
            )
            return figures
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()


def pipeline_cpu(root: int) -> dict[str, float]:
    """CPU seconds of `quantcore up` and its processes, and of this bench's own."""
    me = os.getpid()
    return {**process_tree_cpu(root), f"{me} this bench (clients, polling server)": cpu_seconds(me)}


def cpu_report(
    before: dict[str, float], busy_before: tuple[float, float], root: int, elapsed: float
) -> float:
    """Cores each process of the pipeline used while the clients measured: what the two
    cores were shared among."""
    after = pipeline_cpu(root)
    busy, total = (b - a for a, b in zip(busy_before, machine_cpu(), strict=True))
    cores = os.cpu_count() or 1
    print(f"CPU while measuring: machine {busy / total * cores:.2f} of {cores} cores busy")
    return busy / total * cores
    used = {name: after[name] - before.get(name, 0.0) for name in after}
    for name, seconds in sorted(used.items(), key=lambda kv: -kv[1]):
        if seconds / elapsed >= 0.005:
            print(f"  {seconds / elapsed:5.2f} cores  {name}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", choices=["up", "synthetic"], default="up")
    # 300 s: one whole real-time batch of the Spark job (StreamConfig.realtime_batch), so the
    # pause between two batches is among the samples.
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--symbols", type=int, default=30)
    parser.add_argument(
        "--prometheus",
        choices=["auto", "on", "off"],
        default="auto",
        help="up only: quantcore up's Prometheus (auto: as `up` does, on when installed)",
    )
    parser.add_argument("--rate", type=float, default=10.0, help="synthetic only: Hz per symbol")
    parser.add_argument(
        "--warmup",
        type=float,
        default=150.0,
        # The JVMs compile Spark's generated code for the first minutes (bench.stream_latency
        # shows its cost in windows): measured here is the pipeline's steady state.
        help="up only: seconds between ready and measuring",
    )
    parser.add_argument("--trigger", choices=TRIGGERS, default="realtime")
    parser.add_argument(
        "--lake",
        choices=["on", "off", "both"],
        default="on",
        help="up only: the history lake's sink beside the live queries (on, as `up` does;"
        " both: off then on, --rounds times, and the ratios)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="up --lake both: off/on pairs")
    args = parser.parse_args()
    if args.source == "synthetic":
        run_synthetic(args)
    elif args.lake != "both":
        run_up(args, args.lake)
    else:
        compare_lake(args)


def compare_lake(args: argparse.Namespace) -> None:
    """The lake's cost on the live path: the same pipeline without and with it, alternated
    in one run, and each figure's ratio with the lake to without."""
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    for round_ in range(args.rounds):
        for lake in ("off", "on"):
            print(f"=== round {round_ + 1}, lake {lake}")
            runs[lake].append(run_up(args, lake))
    print(f"lake off -> on, {args.symbols} symbols, {args.seconds:g} s each:")
    for name in runs["off"][0]:
        off = [r[name] for r in runs["off"]]
        on = [r[name] for r in runs["on"]]
        pairs = "; ".join(f"{a:.1f} -> {b:.1f}" for a, b in zip(off, on, strict=True))
        ratio = statistics.median(b / a for a, b in zip(off, on, strict=True) if a)
        print(f"  {name:15} {pairs}  (median ratio {ratio:.2f}x)")


if __name__ == "__main__":
    main()
