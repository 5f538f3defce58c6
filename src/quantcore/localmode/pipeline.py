"""The local pipeline's processes, started in dependency order and stopped in reverse."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Protocol

from quantcore import ownership
from quantcore.devservices.ports import LOOPBACK, free_port
from quantcore.devservices.process import ProcessError, log_tail
from quantcore.devservices.programs import ReplayProcess, ServeProcess, quantcore_argv
from quantcore.devservices.prometheus import INSTALL_HINT, ScrapeTarget
from quantcore.devservices.spark import spark_jars
from quantcore.feedshard import shard_args
from quantcore.localmode.children import Children
from quantcore.localmode.source import (
    Source,
    live_reachable,
    recordings_in,
    symbols_of,
)
from quantcore.routing import CONFIGMAP_KEY, RoutingTable

Say = Callable[[int | None, str], None]

# A feed shard that exits is started again after this long (a Deployment would restart its
# pod), so one shard's death shows as "shard not live" instead of ending the pipeline.
SHARD_RESTART_S = 10.0


class Service(Protocol):
    def stop(self) -> None: ...


class PipelineError(RuntimeError):
    """A part of the pipeline could not start; the message says which and why."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the same path as Ctrl-C: stop every child, then exit.
    raise KeyboardInterrupt


class Pipeline:
    def __init__(self, args: argparse.Namespace, say: Say) -> None:
        self.args = args
        self.say = say
        self.dir: Path = args.dir.resolve()
        self.children = Children()
        self._services: list[Service] = []  # Redis and Kafka from quantcore.devservices
        self.source: Source | None = None
        self.symbols: list[str] = []
        self.target = ""
        self.redis_url = ""
        self.bootstrap = ""
        self.prometheus_url = ""
        # What Prometheus scrapes: every process's /metrics, by component (job).
        self.scrape_targets: list[ScrapeTarget] = []

    @property
    def process_count(self) -> int:
        return len(self.children.started) + len(self._services)

    # --- start -------------------------------------------------------------------
    def start(self) -> None:
        signal.signal(signal.SIGTERM, _terminate)
        try:
            ownership.fresh(self.dir, "--dir")  # the previous run's state, never anyone else's
        except ownership.NotOurs as exc:
            raise PipelineError(str(exc)) from None
        self.source = self._choose_source()
        self._start_services()
        table = self._plan_and_create_topics()
        self._start_feed(table)
        self._start_stream(table.partitions)
        self._start_server()
        self._start_prometheus()
        self._wait_for_signals()

    def _require(self, *commands: str) -> None:
        from quantcore.cli import SUBCOMMANDS

        missing = [c for c in commands if c not in SUBCOMMANDS]
        if missing:
            raise PipelineError(f"`quantcore {' '.join(missing)}` is not available in this build")

    def _choose_source(self) -> Source:
        from quantcore.operator.api import Endpoints

        args = self.args
        live = Endpoints()
        self.say(1, f"choosing the market data source ({args.source})")
        if args.source in ("auto", "live"):
            ok, why = live_reachable(live.rest_url)
            if ok:
                self.symbols = [s.upper() for s in args.symbols or ["BTCUSDT", "ETHUSDT"]]
                self.say(1, f"source: LIVE Binance ({why})")
                ws_url = live.ws_url.rstrip("/") + "/stream"  # the combined-stream endpoint
                return Source("live", ws_url, live.rest_url, why)
            if args.source == "live":
                raise PipelineError(f"live Binance is unreachable: {why}")
            self.say(1, f"live Binance unreachable ({why}); falling back to replay")
        recordings = recordings_in(args.recordings, args.symbols)
        if not recordings:
            raise PipelineError(
                f"no recordings for {args.symbols or 'any symbol'} in {args.recordings}"
            )
        self.symbols = symbols_of(recordings)
        names = ", ".join(f.name for f in recordings)
        self.say(1, f"source: REPLAY of {names} from {args.recordings}")
        return Source("replay", "", "", "replay", recordings)

    def _start_services(self) -> None:
        from quantcore.devservices.kafka import KafkaBroker
        from quantcore.devservices.redis import RedisServer

        try:
            self.say(2, "starting Redis")
            redis = RedisServer(self.dir / "redis", die_with_parent=True)
            self._services.append(redis)
            self.redis_url = redis.start()
            self.say(2, f"Redis at {self.redis_url}")
            self.say(3, "starting Kafka (the first run downloads its jars into the cache)")
            kafka = KafkaBroker(self.dir / "kafka", die_with_parent=True)
            self._services.append(kafka)
            self.bootstrap = kafka.start()
            self.say(3, f"Kafka at {self.bootstrap}")
        except ProcessError as exc:
            raise PipelineError(str(exc)) from exc

    def _plan_and_create_topics(self) -> RoutingTable:
        from quantcore.operator import topics
        from quantcore.operator.api import Kafka, MarketFeedSpec, Sharding, Spark
        from quantcore.operator.planner import next_table

        args = self.args
        spec = MarketFeedSpec(
            image="quantcore:local",
            symbols=self.symbols,
            sharding=Sharding(symbols_per_shard=args.symbols_per_shard),
            kafka=Kafka(bootstrap=self.bootstrap, partitions=args.partitions),
            spark=Spark(image="quantcore:local", trigger=args.trigger),
        )
        table = next_table(spec, None, spec.symbols or [])
        outcome = topics.ensure(spec, table.partitions)
        (self.dir / CONFIGMAP_KEY).write_text(table.to_json())
        self.say(
            4,
            f"routing: {len(table.routes)} symbols on {table.shards} shard(s), "
            f"{table.partitions} partitions; topics {', '.join(sorted(outcome.partitions))}",
        )
        return table

    def _start_feed(self, table: RoutingTable) -> None:
        assert self.source is not None
        ws_url, rest_url = self.source.ws_url, self.source.rest_url
        if self.source.kind == "replay":
            self._require("replay")
            replay = self.children.add(
                ReplayProcess(
                    self.source.recordings,
                    self.dir,
                    loop=True,  # until Ctrl-C
                    log=self.dir / "logs" / "replay.log",
                    die_with_parent=True,
                    metrics_port=self._metrics_port("replay"),
                )
            )
            try:
                replay.wait_started(60)
            except ProcessError as exc:
                raise PipelineError(str(exc)) from exc
            ws_url, rest_url = replay.ws_url, replay.rest_url
            self.say(5, f"replay server on {ws_url}")
        self._require("feed")
        routing = str(self.dir / CONFIGMAP_KEY)
        for shard in range(table.shards):
            args = shard_args(
                routing=routing,
                shard=shard,
                kafka=self.bootstrap,
                ws_url=ws_url,
                rest_url=rest_url,
                metrics_port=self._metrics_port("feed", shard=str(shard)),
            )
            self.children.start(
                f"feed-{shard}",
                quantcore_argv(*args),
                self.dir / "logs" / f"feed-{shard}.log",
                restart_after=SHARD_RESTART_S,
            )
        self.say(5, f"{table.shards} feed shard(s) started (logs in {self.dir / 'logs'})")

    def _start_stream(self, partitions: int) -> None:
        from quantcore.stream.job import task_slots

        self._require("stream")
        self.say(
            6, f"starting the Spark job (trigger {self.args.trigger}); JVM start takes a while"
        )
        self.children.start(
            "stream",
            quantcore_argv(
                "stream",
                "--kafka",
                self.bootstrap,
                "--redis",
                self.redis_url,
                "--checkpoint",
                str(self.dir / "checkpoint"),
                "--trigger",
                self.args.trigger,
                # A real-time task per partition of each query, held for a whole batch.
                "--threads",
                str(max(8, task_slots(partitions))),
                "--jars",
                ",".join(str(jar) for jar in spark_jars()),
                "--metrics-port",
                str(self._metrics_port("stream")),
                "--metrics-host",
                LOOPBACK,
            ),
            self.dir / "logs" / "stream.log",
        )

    def _start_server(self) -> None:
        port = self.args.port if self.args.port else free_port()
        serve = self.children.add(
            ServeProcess(
                self.redis_url,
                port,
                self.dir / "logs" / "serve.log",
                "--metrics-port",
                str(self._metrics_port("serve")),
                # Serve the symbols of the table the feed shards read, as in a cluster.
                "--routing",
                str(self.dir / CONFIGMAP_KEY),
                die_with_parent=True,
            )
        )
        try:
            serve.wait_started(60)
        except ProcessError as exc:
            raise PipelineError(str(exc)) from exc
        self.target = serve.target
        self.say(7, f"gRPC MarketData on {self.target}")

    def _metrics_port(self, job: str, **labels: str) -> int:
        """A free port for one process's /metrics, recorded as a scrape target."""
        port = free_port()
        self.scrape_targets.append(ScrapeTarget(job, f"{LOOPBACK}:{port}", labels))
        return port

    def _start_prometheus(self) -> None:
        """Prometheus scraping every process, with the platform's alert rules (--prometheus)."""
        from quantcore.devservices.prometheus import PrometheusServer
        from quantcore.localmode.source import prometheus_available, rules_file

        mode = self.args.prometheus
        if mode == "off":
            return
        if not prometheus_available():
            if mode == "on":
                raise PipelineError(
                    f"--prometheus on, but prometheus is not installed: {INSTALL_HINT}"
                )
            self.say(8, f"no Prometheus: it is not installed ({INSTALL_HINT})")
            return
        rules = rules_file()
        interval = self.args.prometheus_interval
        server = PrometheusServer(
            self.dir / "prometheus",
            self.scrape_targets,
            rule_files=[rules] if rules.exists() else [],
            scrape_interval=interval,
            evaluation_interval=interval,
            port=self.args.prometheus_port or None,
            die_with_parent=True,
        )
        self._services.append(server)
        try:
            self.prometheus_url = server.start()
        except ProcessError as exc:
            raise PipelineError(str(exc)) from exc
        jobs = sorted({t.job for t in self.scrape_targets})
        self.say(
            8,
            f"Prometheus at {self.prometheus_url} (scrapes {', '.join(jobs)} every {interval}"
            + (f"; alert rules {rules}" if rules.exists() else "; no alert rules found")
            + ")",
        )

    def _wait_for_signals(self) -> None:
        import redis

        from quantcore import signalstore

        client = redis.Redis.from_url(self.redis_url)
        started = time.monotonic()
        last_note = started
        self.say(9, "waiting for the first signals (Spark compiles the job first)")
        try:
            while not client.exists(signalstore.state_key(self.symbols[0])):
                self.children.check()
                if time.monotonic() - started > self.args.ready_timeout:
                    raise PipelineError(
                        f"no signal in Redis after {self.args.ready_timeout:.0f}s; "
                        f"stream log:\n{log_tail(self.dir / 'logs' / 'stream.log')}"
                    )
                if time.monotonic() - last_note > 15:
                    self.say(9, f"still waiting ({time.monotonic() - started:.0f}s)")
                    last_note = time.monotonic()
                time.sleep(0.5)
        except ProcessError as exc:
            raise PipelineError(str(exc)) from exc
        finally:
            client.close()
        assert self.source is not None
        self.say(
            9,
            f"READY in {time.monotonic() - started:.0f}s: source {self.source.kind}, "
            f"symbols {' '.join(self.symbols)}, grpc {self.target}, kafka {self.bootstrap}, "
            f"redis {self.redis_url}, prometheus {self.prometheus_url or 'none'}",
        )

    # --- run ---------------------------------------------------------------------
    def show(self) -> None:
        """The live view (or a quiet wait) until Ctrl-C; fails if a child dies."""
        from quantcore.client.watch import live_view

        async def watch_children() -> None:
            while True:
                for event in self.children.check():
                    self.say(None, event)
                await asyncio.sleep(1.0)

        async def main() -> None:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(watch_children())
                if not self.args.no_view:
                    assert self.source is not None
                    banner = f"quantcore up — source: {self.source.kind}"
                    tg.create_task(live_view(self.target, tuple(self.symbols), banner=banner))

        try:
            asyncio.run(main())
        except* ProcessError as group:
            raise PipelineError(str(group.exceptions[0])) from None

    # --- stop --------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Stop everything in reverse order; the names of anything still alive after."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        try:
            self.children.stop_all()
            for service in reversed(self._services):
                service.stop()
            left = self.children.leftovers()
            for service in self._services:
                process = getattr(service, "process", None)
                if process is not None and process.exit_code() is None:
                    left.append(type(service).__name__)
            return left
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
