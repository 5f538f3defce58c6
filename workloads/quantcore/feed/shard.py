"""A feed shard: serves the symbols its routing-table entry assigns it, from websocket to Kafka.

Tasks (one TaskGroup): the routing-file watcher (a change resubscribes in place), one
`StreamConnection` per <=1024 streams, the snapshot scheduler (staggered, backed off, within the
weight budget), the trade-flow decay ticks, producer polling and the metrics/health endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantcore.events import Topics
from quantcore.feed import binance
from quantcore.feed.binance import StreamConfig
from quantcore.feed.connection import ConnectionSettings, StreamConnection
from quantcore.feed.exchange import Exchange
from quantcore.feed.metrics import serve_metrics
from quantcore.feed.normalizer import Normalizer
from quantcore.feed.producer import FeedProducer
from quantcore.feed.snapshots import SnapshotClient, SnapshotError, backoff
from quantcore.kafkaauth import KafkaAuth
from quantcore.routing import RoutingTable

log = logging.getLogger(__name__)

# The collector, tuned for a process that allocates millions of short-lived tuples and lists
# (none in cycles) over a large, static startup heap. Left at the defaults it took ~14% of a
# saturated shard's CPU (perf), mostly re-traversing that heap in older-generation passes.
GC_SETTLE_S = 2.0  # after the routing table is applied: sockets open, lazy imports done
GC_THRESHOLDS = (20_000, 50, 100)  # the defaults are (700, 10, 10)


@dataclass(frozen=True)
class ShardConfig:
    routing_path: Path
    shard: int
    bootstrap: str
    ws_url: str
    rest_url: str
    levels: int = 20
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    topics: Topics = field(default_factory=Topics)
    streams: StreamConfig = field(default_factory=StreamConfig)
    connection: ConnectionSettings = field(default_factory=ConnectionSettings)
    snapshot_limit: int = binance.SNAPSHOT_LIMIT
    snapshot_concurrency: int = 4
    weight_share: float = 0.5
    routing_poll_s: float = 0.5
    producer_config: dict[str, Any] = field(default_factory=dict)
    # The feed user's Kafka credentials (from the environment: quantcore.kafkaauth).
    kafka_auth: KafkaAuth = field(default_factory=KafkaAuth)
    exchange: Exchange = binance


def assignment(table: RoutingTable, shard: int) -> dict[str, int]:
    """symbol -> partition for the symbols `table` assigns to `shard`."""
    return {r.symbol: r.partition for r in table.routes if r.shard == shard}


class Shard:
    """Made inside the running event loop (its snapshot client opens an HTTP session)."""

    def __init__(self, config: ShardConfig) -> None:
        self.config = config
        self.table: RoutingTable | None = None
        self.routing_errors = 0
        self.started_at = time.monotonic()
        self.symbol_added_at: dict[str, float] = {}
        self._partitions: dict[str, int] = {}
        self._connection_of: dict[str, StreamConnection] = {}
        self.connections: list[StreamConnection] = []
        self._tg: asyncio.TaskGroup | None = None  # while `run` runs: connections start in it
        self.ready = asyncio.Event()  # set once the first routing table was applied
        self._snapshots_wanted = asyncio.Event()  # a book was reset or a symbol added
        self._flow_changed = asyncio.Event()  # a trade moved the trade-flow windows
        cfg = config
        self.producer = FeedProducer(
            cfg.bootstrap,
            cfg.topics,
            self._partitions.get,
            config=cfg.producer_config,
            kafka_auth=cfg.kafka_auth,
        )
        self.normalizer = Normalizer(
            cfg.exchange,
            self.producer.emit,
            levels=cfg.levels,
            partial_books=not cfg.streams.diff_depth and bool(cfg.streams.partial_levels),
            on_snapshot_wanted=lambda symbol: self._snapshots_wanted.set(),
            trade_flow=cfg.streams.trades,
            on_trade_flow=self._flow_changed.set,
        )
        self.snapshots = SnapshotClient(
            cfg.rest_url, weight_share=cfg.weight_share, limit=cfg.snapshot_limit
        )

    # --- lifecycle ---
    async def run(self) -> None:
        cfg = self.config
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._watch_routing(), name="routing")
                tg.create_task(self._schedule_snapshots(), name="snapshots")
                tg.create_task(self._poll_producer(), name="producer-poll")
                if cfg.streams.trades:
                    tg.create_task(self._tick_flows(), name="trade-flow-ticks")
                tg.create_task(self._settle_heap(), name="gc")
                if cfg.metrics_port is not None:
                    tg.create_task(
                        serve_metrics(
                            self.health, cfg.metrics_port, cfg.metrics_host, live=self.live
                        ),
                        name="metrics",
                    )
        finally:
            self._tg = None
            await self.snapshots.close()
            self.normalizer.flush_flows()  # the newest trade flow held by the pacing goes out
            remaining = await asyncio.to_thread(self.producer.flush, 30.0)
            if remaining:
                log.error(
                    "%d records not acknowledged at shutdown",
                    remaining,
                    extra={"unacknowledged": remaining},
                )

    async def _settle_heap(self) -> None:
        """Move the startup heap out of the collector's reach once serving, and collect less often.

        `gc.freeze` keeps every object alive now (modules, classes, the libraries' state) out of
        all later collections; a larger first-generation threshold runs fewer passes over objects
        that mostly die young anyway. Cycles are still collected, only later.
        """
        await self.ready.wait()
        await asyncio.sleep(GC_SETTLE_S)
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)

    # --- routing ---
    async def _watch_routing(self) -> None:
        path = self.config.routing_path
        seen: tuple[int, int, int] | None = None
        while True:
            try:
                st = os.stat(path)
                signature: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
            except FileNotFoundError:
                signature = None
            if signature is not None and signature != seen:
                seen = signature
                try:
                    table = RoutingTable.from_json(path.read_text())
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    # A half-written or broken file: keep serving the table we have.
                    self.routing_errors += 1
                    log.error(
                        "routing file %s unreadable, keeping the current table: %s",
                        path,
                        exc,
                        extra={"path": str(path)},
                    )
                else:
                    self.apply_table(table)
            await asyncio.sleep(self.config.routing_poll_s)

    def apply_table(self, table: RoutingTable) -> None:
        """Move to a new routing table: subscribe added symbols, drop removed ones, in place."""
        if self.table is not None and table.version < self.table.version:
            log.warning(
                "ignoring routing table version %d < %d",
                table.version,
                self.table.version,
                extra={"routing_version": table.version},
            )
            return
        want = assignment(table, self.config.shard)
        have = set(self.normalizer.symbols)
        self.table = table
        removed, added = sorted(have - want.keys()), sorted(want.keys() - have)
        for symbol in removed:
            self._partitions.pop(symbol, None)
            self.normalizer.remove_symbol(symbol)
            self.symbol_added_at.pop(symbol, None)
            conn = self._connection_of.pop(symbol, None)
            if conn is not None:
                conn.unsubscribe(self.config.streams.streams(symbol))
        self._partitions.update(want)
        for symbol in added:
            self.normalizer.add_symbol(symbol)
            self.symbol_added_at[symbol] = time.monotonic()
            conn = self._connection_with_room(len(self.config.streams.streams(symbol)))
            conn.subscribe(self.config.streams.streams(symbol))
            self._connection_of[symbol] = conn
        log.info(
            "routing v%d: serving %d symbols (+%d -%d)",
            table.version,
            len(want),
            len(added),
            len(removed),
            extra={
                "event": "routing",
                "routing_version": table.version,
                "symbols": len(want),
                "added": added,
                "removed": removed,
            },
        )
        self.ready.set()

    def _connection_with_room(self, streams: int) -> StreamConnection:
        for conn in self.connections:
            if len(conn.streams) + streams <= self.config.exchange.MAX_STREAMS_PER_CONNECTION:
                return conn
        if self._tg is None:
            raise RuntimeError("a shard opens connections only while it runs")
        conn = StreamConnection(
            f"shard{self.config.shard}-conn{len(self.connections)}",
            self.config.ws_url,
            self.normalizer.on_frame,  # straight in: this is called for every frame
            self._on_lost,
            self.config.connection,
        )
        self.connections.append(conn)
        self._tg.create_task(conn.run(), name=conn.name)
        return conn

    # --- data path ---
    def _on_lost(self, streams: set[str], reason: str) -> None:
        now = time.time_ns()
        for symbol in {self.config.exchange.symbol_of_stream(s) for s in streams}:
            self.normalizer.reset(symbol, reason, now)

    async def _tick_flows(self) -> None:
        """Emit trade-flow decay ticks as the exchange clock reaches them: sleep until the next
        one is due, or until a trade moves the windows (it may bring an earlier one); after a
        stall, every tick due is emitted at once, in order."""
        normalizer = self.normalizer
        while True:
            normalizer.flow_ticks()
            wait = normalizer.next_flow_tick_s()
            self._flow_changed.clear()
            # The clock may be unknown yet (no event seen) or nothing pending: a trade wakes us.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flow_changed.wait(), wait)

    async def _poll_producer(self) -> None:
        while True:
            self.producer.poll()
            await asyncio.sleep(0.05)

    # --- snapshots ---
    async def _schedule_snapshots(self) -> None:
        normalizer = self.normalizer
        inflight: set[str] = set()
        not_before: dict[str, float] = {}
        limit = asyncio.Semaphore(self.config.snapshot_concurrency)
        async with asyncio.TaskGroup() as tg:
            while True:
                now = time.monotonic()
                for symbol, attempts in normalizer.snapshots_wanted():
                    if symbol in inflight:
                        continue
                    due = not_before.setdefault(symbol, now + backoff(attempts))
                    if now >= due:
                        inflight.add(symbol)
                        tg.create_task(self._fetch(symbol, limit, inflight, not_before))
                # Rescan when a book resets (no 50 ms wait after a gap), or to serve backoffs.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._snapshots_wanted.wait(), 0.05)
                self._snapshots_wanted.clear()

    async def _fetch(
        self,
        symbol: str,
        limit: asyncio.Semaphore,
        inflight: set[str],
        not_before: dict[str, float],
    ) -> None:
        import aiohttp

        normalizer = self.normalizer
        try:
            async with limit:
                if symbol not in normalizer.tick_sizes:
                    normalizer.tick_sizes.update(await self.snapshots.tick_sizes([symbol]))
                response = await self.snapshots.depth(symbol)
            if symbol in normalizer.symbols:
                normalizer.on_snapshot_body(response.body, symbol, response.recv_ns)
        except (SnapshotError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning(
                "snapshot %s failed: %r", symbol, exc, extra={"symbol": symbol, "error": repr(exc)}
            )
            normalizer.snapshot_failed(symbol)
        finally:
            inflight.discard(symbol)
            not_before.pop(symbol, None)

    # --- the one view of its state: /healthz, and /metrics drawn from it ---
    def live(self) -> dict[str, Any]:
        """/live: the symbols this shard serves for real, for the operator's handover."""
        return {
            "shard": self.config.shard,
            "routingVersion": self.table.version if self.table else None,
            "live": self.normalizer.live_symbols(),
        }

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        symbols = self.normalizer.books(time.time_ns())
        stuck = [
            symbol
            for symbol, book in symbols.items()
            if book["state"] != "live" and now - self.symbol_added_at.get(symbol, now) > 60
        ]
        return {
            "healthy": self.table is not None and not stuck,
            "shard": self.config.shard,
            "routing_version": self.table.version if self.table else None,
            "routing_errors": self.routing_errors,
            "symbols": symbols,
            "quarantined": dict(self.normalizer.quarantined),
            "messages": dict(self.normalizer.messages),
            "produced": self.producer.produced,
            "delivered": self.producer.delivered,
            "delivery_failed": self.producer.failed,
            "connections": [
                {
                    "name": c.name,
                    "connected": c.connected,
                    "streams": len(c.streams),
                    "connects": c.connects,
                    "reconnects": c.reconnects,
                    "handovers": c.handovers,
                    "stale": c.stale,
                    "frame_errors": c.frame_errors,
                    "control_sent": c.control_sent,
                }
                for c in self.connections
            ],
        }
