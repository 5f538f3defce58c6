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

from quantcore import kafkaacl, ownership, redisacl
from quantcore.client.security import ClientCredentials
from quantcore.devservices.certs import LocalCredentials, local_credentials
from quantcore.devservices.ports import LOOPBACK, free_port
from quantcore.devservices.process import ProcessError, log_tail
from quantcore.devservices.programs import ReplayProcess, ServeProcess, child_env, quantcore_argv
from quantcore.devservices.prometheus import INSTALL_HINT, ScrapeTarget
from quantcore.devservices.spark import spark_jars
from quantcore.events import Topics
from quantcore.feedshard import shard_args
from quantcore.kafkaauth import KafkaAuth
from quantcore.localmode.children import Children
from quantcore.localmode.security import Security
from quantcore.localmode.source import (
    Source,
    live_reachable,
    recordings_in,
    symbols_of,
)
from quantcore.redisauth import RedisAuth
from quantcore.routing import CONFIGMAP_KEY, RoutingTable

Say = Callable[[int | None, str], None]

# Kept across runs (certificates and token, reused while valid), so a client configured once
# keeps working.
TLS_DIR = "tls"
# The lake, kept across runs too: history is what it is for. Each run writes a sink of its own
# (its checkpoint starts afresh with the run's fresh Kafka: quantcore.lake).
LAKE_DIR = "lake"
LAKE_NICENESS = 10  # the lake job's: its CPU goes to the live path first
# How often retention looks for expired days while the pipeline runs.
RETENTION_EVERY_S = 3600.0

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
        self.security = Security.from_args(args)
        self.children = Children()
        self._services: list[Service] = []  # Redis and Kafka from quantcore.devservices
        self.source: Source | None = None
        self.symbols: list[str] = []
        self.target = ""
        self.redis_url = ""  # the address only: credentials go to each process apart
        self._redis_auth: dict[str, RedisAuth] = {}  # ACL user -> its credentials
        self._kafka_auth: dict[str, KafkaAuth] = {}  # SCRAM user -> its credentials
        self.bootstrap = ""
        self.prometheus_url = ""
        self.credentials: LocalCredentials | None = None  # None: --insecure
        # What Prometheus scrapes: every process's /metrics, by component (job).
        self.scrape_targets: list[ScrapeTarget] = []

    @property
    def process_count(self) -> int:
        return len(self.children.started) + len(self._services)

    # --- start -------------------------------------------------------------------
    def start(self) -> None:
        signal.signal(signal.SIGTERM, _terminate)
        try:
            # The previous run's state, never anyone else's; its certificates stay for reuse.
            ownership.fresh(self.dir, "--dir", keep=(TLS_DIR, LAKE_DIR))
        except ownership.NotOurs as exc:
            raise PipelineError(str(exc)) from None
        self.source = self._choose_source()
        self._start_services()
        table = self._plan_and_create_topics()
        self._start_feed(table)
        self._apply_lake_retention()
        self._compact_lake()
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
        if args.source == "archive":
            return self._archived_source()
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

    def _archived_source(self) -> Source:
        """The interval --from/--to of the lake's raw table, as recordings in DIR/archive."""
        from quantcore import lake
        from quantcore.feed.archive import NothingArchived, export

        args = self.args
        if args.start is None or args.end is None:
            raise PipelineError("--source archive needs --from and --to")
        root = args.archive or self.dir / LAKE_DIR
        try:
            span = lake.interval(args.start, args.end)
            out = self.dir / "archive" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            exported = export(root, span, out, [s.upper() for s in args.symbols or []])
        except (ValueError, NothingArchived) as error:
            raise PipelineError(f"--source archive: {error}") from error
        self.symbols = sorted(item.symbol for item in exported)
        lines = sum(item.lines - item.history for item in exported)
        self.say(1, f"source: ARCHIVE of {root}, {args.start} to {args.end}: {lines} lines")
        return Source(
            "replay", "", "", "archive", tuple(i.path for i in exported), start=args.start
        )

    def _start_services(self) -> None:
        from quantcore.devservices.kafka import KafkaBroker
        from quantcore.devservices.redis import RedisServer

        try:
            self.say(2, f"starting Redis ({self.security.describe()})")
            redis = RedisServer(
                self.dir / "redis",
                die_with_parent=True,
                insecure=not self.security.redis_tls_and_acl,
                # The pipeline's users alone: nobody here needs an admin.
                users=redisacl.PIPELINE_USERS,
            )
            self._services.append(redis)
            redis.start()
            self.redis_url = redis.address
            self._redis_auth = {user: redis.auth(user) for user in redisacl.PIPELINE_USERS}
            if self.security.redis_tls_and_acl:
                self.say(
                    2,
                    f"Redis at {self.redis_url}: TLS only (CA {redis.auth(redisacl.SERVE).ca_file}),"
                    f" users {' and '.join(redisacl.PIPELINE_USERS)} (passwords in"
                    f" {redis.workdir / 'passwords'}), default user off",
                )
            else:
                self.say(2, f"Redis at {self.redis_url}: INSECURE, no TLS and no passwords")
            self.say(3, "starting Kafka (the first run downloads its jars into the cache)")
            kafka = KafkaBroker(
                self.dir / "kafka",
                die_with_parent=True,
                insecure=not self.security.kafka_sasl_ssl,
                # ACLs for the default topics, which the local MarketFeed spec uses.
                feeds=(Topics(),),
            )
            self._services.append(kafka)
            self.bootstrap = kafka.start()
            self._kafka_auth = {user: kafka.auth(user) for user in kafkaacl.PIPELINE_USERS}
            if self.security.kafka_sasl_ssl:
                self.say(
                    3,
                    f"Kafka at {self.bootstrap}: SASL_SSL only (SCRAM-SHA-512, CA"
                    f" {kafka.auth(kafkaacl.FEED).ca_file}), users"
                    f" {', '.join(kafkaacl.PIPELINE_USERS)} with ACLs (passwords in"
                    f" {kafka.workdir / 'security' / 'passwords'})",
                )
            else:
                self.say(3, f"Kafka at {self.bootstrap}: INSECURE, PLAINTEXT without users")
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
        # As the operator's Kafka user: it may manage the feed's topics, nothing else.
        outcome = topics.ensure(spec, table.partitions, self._kafka_auth[kafkaacl.OPERATOR])
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
                    # Recordings until Ctrl-C; an archived interval once, as it happened.
                    loop=self.source.start is None,
                    start=self.source.start,
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
                # A shard never talks to Redis; to Kafka as the feed user alone.
                env=child_env(kafka=self._kafka_auth[kafkaacl.FEED]),
            )
        self.say(5, f"{table.shards} feed shard(s) started (logs in {self.dir / 'logs'})")

    @property
    def lake_dir(self) -> Path | None:
        """The lake's root (None: --no-lake)."""
        return None if self.args.no_lake else self.dir / LAKE_DIR

    def _lake_args(self) -> list[str]:
        if self.lake_dir is None:
            return []
        sink = self.lake_dir / time.strftime("run-%Y%m%dT%H%M%SZ", time.gmtime())
        from quantcore.lake import log_retention

        args = ["--lake", str(sink), "--lake-interval", f"{self.args.lake_interval:g} seconds"]
        retention = log_retention(self.args.lake_retention_days)
        return args + (["--lake-retention", retention] if retention else [])

    def _apply_lake_retention(self) -> None:
        from quantcore import lakestore

        if self.lake_dir is None or not self.lake_dir.is_dir():
            return
        lakestore.remove_expired(
            self.lake_dir, self.args.lake_retention_days, int(time.time() * 1000)
        )

    def _compact_lake(self) -> None:
        """Merge the small files of the earlier runs' sinks (quantcore.lakecompaction): no job
        writes them any more, since every run writes a sink of its own, made after this."""
        from quantcore import lakecompaction

        if self.lake_dir is None or not self.lake_dir.is_dir():
            return
        done = lakecompaction.compact(self.lake_dir)
        if done:
            before, after = sum(c.files_before for c in done), sum(c.files_after for c in done)
            self.say(6, f"lake: merged {before} small files of earlier runs into {after}")

    def _start_stream(self, partitions: int) -> None:
        from quantcore.stream.job import task_slots

        self._require("stream")
        lake = (
            f", history in {self.lake_dir} (`quantcore history SYMBOL --lake {self.lake_dir}`)"
            if self.lake_dir is not None
            else ""
        )
        self.say(
            6,
            f"starting the Spark job (trigger {self.args.trigger}{lake}); JVM start takes a while",
        )
        common = [
            "--kafka",
            self.bootstrap,
            "--redis",
            self.redis_url,
            "--checkpoint",
            str(self.dir / "checkpoint"),
            "--trigger",
            self.args.trigger,
            "--jars",
            ",".join(str(jar) for jar in spark_jars()),
            "--metrics-host",
            LOOPBACK,
        ]
        env = child_env(self._redis_auth[redisacl.RELAY], kafka=self._kafka_auth[kafkaacl.STREAM])
        self.children.start(
            "stream",
            quantcore_argv(
                "stream",
                *common,
                "--only",
                "live",
                # A real-time task per partition of each query, held for a whole batch.
                "--threads",
                str(max(8, task_slots(partitions))),
                "--metrics-port",
                str(self._metrics_port("stream", part="live")),
            ),
            self.dir / "logs" / "stream.log",
            env=env,
        )
        if self.lake_dir is None:
            return
        # The lake's queries in a job of their own, at a lower CPU priority: each lake batch
        # is seconds of parsing and writing, which on a small machine would otherwise delay
        # the live path's updates (docs/architecture.md, "The lake").
        lake_job = quantcore_argv(
            "stream",
            *common,
            "--only",
            "lake",
            *self._lake_args(),
            "--threads",
            str(max(2, partitions)),
            "--metrics-port",
            str(self._metrics_port("stream", part="lake")),
        )
        self.children.start(
            "lake",
            ["nice", "-n", str(LAKE_NICENESS), *lake_job],
            self.dir / "logs" / "lake.log",
            env=env,
        )

    def _security_args(self) -> list[str]:
        """TLS and tokens from DIR/tls (made, or reused while valid), unless --insecure."""
        if self.security.insecure:
            return ["--insecure"]
        tls_dir = self.dir / TLS_DIR
        if tls_dir.is_symlink():  # only ever a directory of ours
            tls_dir.unlink()
        self.credentials, reused = local_credentials(tls_dir)
        self.say(
            7,
            f"{'reusing' if reused else 'made'} a CA, server and client certificates and a"
            f" token in {tls_dir}",
        )
        return [
            "--tls-dir",
            str(tls_dir),
            "--tls-client-auth",
            self.args.client_auth,
            "--tokens",
            str(self.credentials.tokens),
        ]

    def client_credentials(self) -> ClientCredentials:
        """What a client of this pipeline needs (the live view is one)."""
        creds = self.credentials
        if creds is None:
            return ClientCredentials()
        mutual = self.args.client_auth == "require"
        return ClientCredentials(
            ca=creds.ca,
            cert=creds.client_cert if mutual else None,
            key=creds.client_key if mutual else None,
            token=creds.client_token.read_text().strip(),
        )

    def attach_hint(self) -> str:
        """The command that attaches to this pipeline's stream."""
        hint = f"quantcore watch --target {self.target}"
        creds = self.credentials
        if creds is None:
            return hint + "; plaintext, --insecure"
        if self.args.client_auth == "require":
            hint += f" --cert {creds.client_cert} --key {creds.client_key}"
        return hint + f" --ca {creds.ca} --token-file {creds.client_token}"

    def _start_server(self) -> None:
        port = self.args.port if self.args.port else free_port()
        security = self._security_args()
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
                # History reads the whole lake (every run's sink), as `quantcore history` does.
                *(["--lake", str(self.lake_dir)] if self.lake_dir is not None else []),
                *security,
                redis_auth=self._redis_auth[redisacl.SERVE],
                die_with_parent=True,
            )
        )
        try:
            serve.wait_started(60)
        except ProcessError as exc:
            raise PipelineError(str(exc)) from exc
        self.target = serve.target
        mode = "plaintext (--insecure)" if self.credentials is None else "TLS + bearer token"
        self.say(7, f"gRPC MarketData on {self.target}, {mode}; attach: {self.attach_hint()}")

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

        # As the serving tier: its user may read the signals, nothing else.
        auth = self._redis_auth[redisacl.SERVE]
        client = redis.Redis.from_url(self.redis_url, **auth.client_kwargs())
        first = signalstore.state_key(self.symbols[0])
        fields = [signalstore.seq_field(kind) for kind in signalstore.KINDS]
        started = time.monotonic()
        last_note = started
        self.say(9, "waiting for the first signals (Spark compiles the job first)")
        try:
            while not any(client.hmget(first, fields)):
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
            f"redis {self.redis_url}, prometheus {self.prometheus_url or 'none'}"
            f" (attach: {self.attach_hint()})",
        )

    # --- run ---------------------------------------------------------------------
    def show(self) -> None:
        """The live view (or a quiet wait) until Ctrl-C; fails if a child dies."""
        from quantcore.client.watch import live_view

        async def watch_children() -> None:
            retention_due = time.monotonic() + RETENTION_EVERY_S
            while True:
                self.children.check()  # logs each exit and restart
                if time.monotonic() >= retention_due:
                    await asyncio.to_thread(self._apply_lake_retention)
                    retention_due = time.monotonic() + RETENTION_EVERY_S
                await asyncio.sleep(1.0)

        async def main() -> None:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(watch_children())
                if not self.args.no_view:
                    assert self.source is not None
                    banner = f"quantcore up — source: {self.source.kind}"
                    tg.create_task(
                        live_view(
                            self.target,
                            tuple(self.symbols),
                            banner=banner,
                            credentials=self.client_credentials(),
                        )
                    )

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
