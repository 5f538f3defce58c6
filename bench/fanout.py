"""Fan-out of the MarketData server: N subscribers x M symbols at R Hz per symbol.

    python -m bench.fanout [--subscribers 1000] [--symbols 30] [--rate 10] [--seconds 20]

A real redis-server and `quantcore serve` (its own process, so its RSS is its own); a
publisher writes updates with the sink's compare-and-set layout; subscriber streams run
in separate client processes. Prints updates delivered per second (and how many were
conflated away instead), the serving tier's added latency (Redis pub/sub receive ->
client receive, p50/p99) and server RSS. Then a slow-consumer run: the same latency with
and without one subscriber that stops reading, in the same server. Then the cost of TLS:
two servers on the same Redis, one plaintext (`--insecure`) and one with TLS and bearer
tokens (as `quantcore up` runs it), measured in alternating rounds with the same publisher
and subscriber count (`--tls-subscribers`; `--only tls` runs this part alone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.procstat import cpu_seconds, rss_mib
from quantcore.devservices.programs import ServeProcess

ROOT = Path(__file__).parents[1]


def pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


# --- client role (a child process) ------------------------------------------------------


async def clients(args: argparse.Namespace) -> dict[str, object]:

    from quantcore.client.security import ClientCredentials
    from quantcore.v1 import marketdata_pb2, marketdata_pb2_grpc

    symbols = [f"S{i:03d}USDT" for i in range(args.symbols)]
    creds = ClientCredentials(ca=Path(args.ca) if args.ca else None, token=args.token)
    channels = [creds.channel(args.target) for _ in range(args.channels)]
    ready = 0
    all_ready = asyncio.Event()
    received = 0
    samples: list[int] = []
    measuring = asyncio.Event()
    done = asyncio.Event()

    async def stream(i: int) -> None:
        nonlocal ready, received
        stub = marketdata_pb2_grpc.MarketDataStub(channels[i % len(channels)])
        call = stub.Subscribe(
            marketdata_pb2.SubscribeRequest(symbols=symbols), metadata=creds.metadata()
        )
        first = True
        if args.stall_one and i == 0:
            await call.read()  # connected; now read nothing, ever
            ready += 1
            if ready == args.streams:
                all_ready.set()
            await done.wait()
            call.cancel()
            return
        async for batch in call:
            now = time.time_ns()
            if first:
                ready += 1
                first = False
                if ready == args.streams:
                    all_ready.set()
            if measuring.is_set() and not done.is_set():
                for update in batch.updates:
                    received += 1
                    if received % args.sample_every == 0:
                        samples.append(now - update.hops.server_receive_ns)
            if done.is_set():
                break
        call.cancel()

    tasks = [asyncio.create_task(stream(i)) for i in range(args.streams)]
    async with asyncio.timeout(120):
        await all_ready.wait()
    print("ready", flush=True)  # the parent starts publishing on this line
    # ... and says "go" when the measured window starts; the loop keeps reading meanwhile.
    await asyncio.to_thread(sys.stdin.readline)
    measuring.set()
    started = time.monotonic()
    cpu_start = time.process_time()
    await asyncio.sleep(args.seconds)
    done.set()
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu_start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()
    return {
        "received": received,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "samples": samples,
        "ready": ready,
    }


# --- parent ---------------------------------------------------------------------------------


class Publisher:
    def __init__(self, redis_url: str, symbols: int, rate: float) -> None:
        self.redis_url = redis_url
        self.symbols = [f"S{i:03d}USDT" for i in range(symbols)]
        self.rate = rate
        self.published = 0
        self.seq = 0

    async def prime(self) -> None:
        stop = asyncio.Event()
        stop.set()
        await self.run(stop, once=True)

    async def run(self, stop: asyncio.Event, once: bool = False) -> None:
        import redis.asyncio as aioredis

        from tests.integration.signalsink import SignalSink

        client = aioredis.Redis.from_url(self.redis_url)
        sink = SignalSink(client)
        if once:
            self.seq = int(time.time() * 1000)  # above anything an earlier run wrote
            await sink.books([(s, self.seq, 100.0) for s in self.symbols])
            await client.aclose()
            return
        period = 1.0 / self.rate
        next_tick = time.monotonic()
        try:
            while not stop.is_set():
                self.seq += 1
                await sink.books([(s, self.seq, 100.0 + random.random()) for s in self.symbols])
                self.published += len(self.symbols)
                next_tick += period
                await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        finally:
            await client.aclose()


async def client_processes(
    target: str,
    args: argparse.Namespace,
    streams: int,
    stall_one: bool,
    procs: int,
    credentials: tuple[str, ...] = (),
) -> list[asyncio.subprocess.Process]:
    children = []
    per = [streams // procs + (1 if i < streams % procs else 0) for i in range(procs)]
    for i, n in enumerate(per):
        argv = [sys.executable, "-m", "bench.fanout", "--role", "client", "--target", target]
        argv += [
            "--streams",
            str(n),
            "--symbols",
            str(args.symbols),
            "--seconds",
            str(args.seconds),
        ]
        argv += ["--channels", str(max(1, n // 100)), "--sample-every", str(args.sample_every)]
        argv += credentials
        if stall_one and i == 0:
            argv.append("--stall-one")
        children.append(
            await asyncio.create_subprocess_exec(
                *argv,
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        )
    for child in children:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 120)
        assert line.strip() == b"ready", line
    return children


async def measure(
    target: str,
    redis_url: str,
    args: argparse.Namespace,
    streams: int,
    stall_one: bool,
    server_pid: int,
    credentials: tuple[str, ...] = (),
) -> dict[str, Any]:
    publisher = Publisher(redis_url, args.symbols, args.rate)
    await publisher.prime()  # every symbol has a value, so each stream starts with a snapshot
    children = await client_processes(
        target, args, streams, stall_one, args.client_procs, credentials
    )
    stop = asyncio.Event()
    pub = asyncio.create_task(publisher.run(stop))
    await asyncio.sleep(2.0)  # warm up
    before = publisher.published
    server_cpu = cpu_seconds(server_pid)
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        await child.stdin.drain()
    results = []
    for child in children:
        out, _ = await child.communicate()
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    server_cpu = cpu_seconds(server_pid) - server_cpu
    stop.set()
    await pub
    published = publisher.published - before
    received = sum(int(r["received"]) for r in results)
    seconds = max(float(r["seconds"]) for r in results)
    samples = [s for r in results for s in r["samples"]]
    reading = streams - (1 if stall_one else 0)
    return {
        "samples_ns": samples,
        "published_per_s": published / seconds,
        "delivered_per_s": received / seconds,
        "offered_per_s": published / seconds * reading,
        "p50_ms": pct(samples, 0.50),
        "p99_ms": pct(samples, 0.99),
        "samples": len(samples),
        # Cores busy during the window: what bounds the figures on a shared machine.
        "server_cores": server_cpu / seconds,
        "client_cores": sum(float(r["cpu_seconds"]) for r in results) / seconds,
    }


async def run_all(
    args: argparse.Namespace, target: str, redis_url: str, server: ServeProcess
) -> None:
    idle_rss, _ = rss_mib(server.pid)
    print(
        f"fan-out: {args.subscribers} subscribers x {args.symbols} symbols at "
        f"{args.rate:g} Hz per symbol, {args.seconds:g} s measured, "
        f"{args.client_procs} client processes, {os.cpu_count()} CPUs"
    )
    r = await measure(target, redis_url, args, args.subscribers, False, server.pid)
    rss, peak = rss_mib(server.pid)
    print(f"  updates published/s          {r['published_per_s']:10.0f}")
    print(f"  updates offered to clients/s {r['offered_per_s']:10.0f}")
    print(
        f"  updates delivered/s          {r['delivered_per_s']:10.0f}"
        f"  ({r['delivered_per_s'] / max(r['offered_per_s'], 1):.1%};"
        " the rest conflated to the latest value)"
    )
    print(
        f"  added latency (Redis -> client) p50 {r['p50_ms']:.1f} ms"
        f"  p99 {r['p99_ms']:.1f} ms  ({r['samples']} samples)"
    )
    print(f"  server RSS idle {idle_rss:.0f} MB, after {rss:.0f} MB, peak {peak:.0f} MB")
    print(
        f"  cores busy: server {r['server_cores']:.2f}, client processes {r['client_cores']:.2f}"
        f" (of {os.cpu_count()})"
    )

    n = args.slow_subscribers
    print(f"slow consumer: {n} subscribers, then {n} + 1 that stops reading")
    base = await measure(target, redis_url, args, n, False, server.pid)
    slow = await measure(target, redis_url, args, n + 1, True, server.pid)
    rss2, peak2 = rss_mib(server.pid)
    for name, m in (("without", base), ("with", slow)):
        print(
            f"  {name:7} the stalled client: p50 {m['p50_ms']:.1f} ms  "
            f"p99 {m['p99_ms']:.1f} ms  delivered/s {m['delivered_per_s']:.0f}"
        )
    print(
        f"  p99 ratio with/without {slow['p99_ms'] / base['p99_ms']:.2f}; "
        f"server RSS {rss2:.0f} MB (peak {peak2:.0f} MB)"
    )


async def tls_cost(
    args: argparse.Namespace, redis_url: str, plain: ServeProcess, tls: ServeProcess,
    credentials: tuple[str, ...],
) -> None:  # fmt: skip
    """Plaintext vs TLS + token, same Redis, publisher and subscriber count, rounds alternated
    so both see the same background load."""
    n = args.tls_subscribers
    print(
        f"TLS cost: {n} subscribers x {args.symbols} symbols at {args.rate:g} Hz, "
        f"{args.tls_rounds} alternating rounds of {args.seconds:g} s per mode"
    )
    samples: dict[str, list[int]] = {"plaintext": [], "TLS + token": []}
    delivered: dict[str, list[float]] = {k: [] for k in samples}
    cores: dict[str, list[float]] = {k: [] for k in samples}
    for _ in range(args.tls_rounds):
        for name, server, creds in (
            ("plaintext", plain, ()),
            ("TLS + token", tls, credentials),
        ):
            r = await measure(server.target, redis_url, args, n, False, server.pid, creds)
            samples[name] += r["samples_ns"]
            delivered[name].append(r["delivered_per_s"])
            cores[name].append(r["server_cores"])
    for name, values in samples.items():
        print(
            f"  {name:12} Redis -> client p50 {pct(values, 0.50):.2f} ms"
            f"  p99 {pct(values, 0.99):.2f} ms  ({len(values)} samples)"
            f"  delivered/s {sum(delivered[name]) / len(delivered[name]):.0f}"
            f"  server cores {sum(cores[name]) / len(cores[name]):.2f}"
        )
    base, secured = samples["plaintext"], samples["TLS + token"]
    print(
        f"  TLS adds p50 {pct(secured, 0.50) - pct(base, 0.50):+.2f} ms,"
        f" p99 {pct(secured, 0.99) - pct(base, 0.99):+.2f} ms"
    )


def parent(args: argparse.Namespace) -> None:
    from quantcore.devservices.certs import local_credentials
    from quantcore.devservices.ports import free_port
    from quantcore.devservices.redis import RedisServer
    from quantcore.redisacl import SERVE

    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        redis = RedisServer(Path(tmp) / "redis")
        redis_url = redis.start()
        try:
            log = Path(tmp) / "serve.log"
            # SIGTERM, then SIGKILL if it has not drained and exited within 30 s.
            server = ServeProcess(
                redis.address,
                free_port(),
                log,
                "--max-streams",
                "100000",
                redis_auth=redis.auth(SERVE),
            )
            with server:
                if args.only in ("all", "fanout"):
                    asyncio.run(run_all(args, server.target, redis_url, server))
                if args.only in ("all", "tls"):
                    made, _ = local_credentials(Path(tmp) / "tls")
                    secured = ServeProcess(
                        redis_url, free_port(), Path(tmp) / "serve-tls.log",
                        "--max-streams", "100000", "--tls-dir", str(made.directory),
                        "--tokens", str(made.tokens), "--streams-per-identity", "0",
                    )  # fmt: skip
                    token = made.client_token.read_text().strip()
                    with secured:
                        asyncio.run(
                            tls_cost(
                                args,
                                redis_url,
                                server,
                                secured,
                                ("--ca", str(made.ca), "--token", token),
                            )
                        )
                        secured.stop(timeout=30)
                server.stop(timeout=30)
        finally:
            redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", choices=["parent", "client"], default="parent")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--slow-subscribers", type=int, default=100)
    parser.add_argument("--symbols", type=int, default=30)
    parser.add_argument("--rate", type=float, default=10.0, help="updates/s per symbol")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--sample-every", type=int, default=20)
    parser.add_argument("--only", choices=["all", "fanout", "tls"], default="all")
    parser.add_argument("--tls-subscribers", type=int, default=100)
    parser.add_argument("--tls-rounds", type=int, default=2)
    # client role
    parser.add_argument("--target")
    parser.add_argument("--streams", type=int)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--stall-one", action="store_true")
    parser.add_argument("--ca", default=None)
    parser.add_argument("--token", default=None)
    args = parser.parse_args()
    if args.role == "client":
        print(json.dumps(asyncio.run(clients(args))), flush=True)
    else:
        parent(args)


if __name__ == "__main__":
    main()
