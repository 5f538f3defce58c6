"""The MarketData gRPC service (grpc.aio): snapshot then stream, health, reflection, limits.

Subscribe forwards the sink's bytes (plus the server's hop stamps), so the response
serializer is the identity; requests are decoded with the generated messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc
import redis.asyncio as aioredis
from google.protobuf.field_mask_pb2 import FieldMask
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from redis.exceptions import RedisError

from quantcore import signalstore
from quantcore.routing import RoutingTable
from quantcore.serve import encoding, metrics
from quantcore.serve.conflation import ConflatingQueue, QueueClosed
from quantcore.serve.fanout import Fanout, Subscription
from quantcore.serve.served import ServedSymbols, watch_file
from quantcore.serve.snapshot import list_symbols, read_latest
from quantcore.v1 import marketdata_pb2, signals_pb2

log = logging.getLogger(__name__)

SERVICE_NAME = marketdata_pb2.DESCRIPTOR.services_by_name["MarketData"].full_name
_SYMBOL = re.compile(r"^[A-Z0-9]{1,32}$")


@dataclass(frozen=True)
class ServerConfig:
    redis_url: str
    host: str = "0.0.0.0"
    port: int = 50051  # 0: pick a free port
    max_streams: int = 10_000  # open Subscribe calls, over all connections
    max_streams_per_connection: int = 2_000
    max_symbols_per_request: int = 1_000
    max_batch: int = 256  # updates per stream message
    redis_connections: int = 16  # for snapshot reads
    max_request_bytes: int = 64 * 1024
    max_response_bytes: int = 16 * 1024 * 1024
    keepalive_time_ms: int = 20_000
    keepalive_timeout_ms: int = 10_000
    shutdown_grace_s: float = 5.0
    # The routing table (JSON) naming the served symbols; None: every symbol in Redis.
    routing_path: Path | None = None
    routing_poll_s: float = 0.5

    def grpc_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_concurrent_streams", self.max_streams_per_connection),
            ("grpc.max_receive_message_length", self.max_request_bytes),
            ("grpc.max_send_message_length", self.max_response_bytes),
            ("grpc.keepalive_time_ms", self.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            # Let clients ping every 5 s; fewer would get them a GOAWAY (too_many_pings).
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
            ("grpc.http2.max_pings_without_data", 0),
            # Two servers on one port would split the clients silently.
            ("grpc.so_reuseport", 0),
        ]


class RequestError(ValueError):
    """A request the server refuses with INVALID_ARGUMENT."""


def selection(
    symbols: Iterable[str], kinds: Iterable[str], limit: int
) -> tuple[frozenset[str] | None, frozenset[str]]:
    """Validate the symbols and kinds of a request. Empty symbols: every symbol (None)."""
    wanted = [s.strip().upper() for s in symbols]
    if len(wanted) > limit:
        raise RequestError(f"{len(wanted)} symbols requested; the limit is {limit}")
    bad = [s for s in wanted if not _SYMBOL.match(s)]
    if bad:
        raise RequestError(f"not exchange symbols: {bad[:5]!r}")
    kind_set = frozenset(kinds) or frozenset(signalstore.KINDS)
    unknown = kind_set - set(signalstore.KINDS)
    if unknown:
        raise RequestError(f"unknown kinds {sorted(unknown)!r}; known: {signalstore.KINDS!r}")
    return (frozenset(wanted) or None), kind_set


class MarketDataService:
    def __init__(
        self,
        config: ServerConfig,
        redis: aioredis.Redis,
        fanout: Fanout,
        served: ServedSymbols | None = None,
    ) -> None:
        self._config = config
        self._redis = redis
        self._fanout = fanout
        self._served = served or ServedSymbols(routed=False)
        self._active = 0

    @property
    def active_streams(self) -> int:
        return self._active

    async def _names(self, symbols: frozenset[str] | None) -> list[str]:
        """The served symbols among those asked for (None: all that Redis holds)."""
        if symbols is None:
            return self._served.select(await list_symbols(self._redis))
        return self._served.select(symbols)

    def _scope(
        self, request: marketdata_pb2.SubscribeRequest | marketdata_pb2.SnapshotRequest
    ) -> tuple[frozenset[str] | None, frozenset[str], FieldMask | None]:
        """The symbols, kinds and field mask a request asks for; ValueError if it is invalid."""
        symbols, kinds = selection(
            request.symbols, request.kinds, self._config.max_symbols_per_request
        )
        return symbols, kinds, encoding.field_mask(list(request.fields.paths))

    async def subscribe(
        self, request: marketdata_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        try:
            symbols, kinds, mask = self._scope(request)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        if self._active >= self._config.max_streams:
            metrics.REJECTED_STREAMS.inc()
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"server at its limit of {self._config.max_streams} streams",
            )
            return
        queue = ConflatingQueue(min_interval_ns=request.min_interval_ms * 1_000_000)
        sub = Subscription(symbols, kinds, queue)
        # Attach before reading the snapshot: whatever is published meanwhile is queued,
        # and the queue's sequence check drops the copy the snapshot also holds.
        self._fanout.attach(sub)
        self._active += 1
        metrics.ACTIVE_STREAMS.inc()
        try:
            try:
                names = await self._names(symbols)
                for update in await read_latest(self._redis, names, kinds):
                    # Re-checked: the table may have dropped the symbol during the read.
                    if self._served.allows(update.symbol):
                        queue.offer(update)
            except RedisError as exc:
                metrics.STREAMS_DROPPED.labels("store_unavailable").inc()
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"signal store unreachable: {exc}")
                return
            conflated = 0
            while True:
                try:
                    updates = await queue.get_many(self._config.max_batch)
                except QueueClosed as exc:
                    metrics.STREAMS_DROPPED.labels("queue_closed").inc()
                    await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
                    return
                send_ns = time.time_ns()
                if mask is None:
                    pairs = [(u.payload, u.receive_stamp) for u in updates]
                else:
                    pairs = [(encoding.masked(u.payload, mask), u.receive_stamp) for u in updates]
                # One sample per batch, its oldest update: per-update observations cost more
                # than the forwarding itself at a thousand streams.
                oldest = min(u.server_receive_ns for u in updates)
                metrics.SERVER_DWELL.observe(max(0, send_ns - oldest) / 1e9)
                yield encoding.stamped_batch(pairs, send_ns)
                metrics.UPDATES_SENT.inc(len(updates))
                if queue.conflated != conflated:
                    metrics.UPDATES_CONFLATED.inc(queue.conflated - conflated)
                    conflated = queue.conflated
        finally:
            self._fanout.detach(sub)
            self._active -= 1
            metrics.ACTIVE_STREAMS.dec()

    async def get_snapshot(
        self, request: marketdata_pb2.SnapshotRequest, context: grpc.aio.ServicerContext
    ) -> marketdata_pb2.Snapshot:
        try:
            symbols, kinds, mask = self._scope(request)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # abort raises; this line only tells the type checker
        try:
            names = await self._names(symbols)
            latest = await read_latest(self._redis, names, kinds)
        except RedisError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"signal store unreachable: {exc}")
            raise
        snapshot = marketdata_pb2.Snapshot()
        now = time.time_ns()
        for update in latest:
            if not self._served.allows(update.symbol):
                continue
            payload = update.payload if mask is None else encoding.masked(update.payload, mask)
            snapshot.updates.append(
                signals_pb2.SignalUpdate.FromString(
                    encoding.stamped(payload, update.server_receive_ns, now)
                )
            )
        return snapshot

    async def list_symbols(
        self, request: marketdata_pb2.ListSymbolsRequest, context: grpc.aio.ServicerContext
    ) -> marketdata_pb2.ListSymbolsResponse:
        try:
            names = await self._names(None)
        except RedisError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"signal store unreachable: {exc}")
            raise
        return marketdata_pb2.ListSymbolsResponse(symbols=names)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Subscribe": grpc.unary_stream_rpc_method_handler(
                    self.subscribe,
                    request_deserializer=marketdata_pb2.SubscribeRequest.FromString,
                    response_serializer=None,  # already bytes
                ),
                "GetSnapshot": grpc.unary_unary_rpc_method_handler(
                    self.get_snapshot,
                    request_deserializer=marketdata_pb2.SnapshotRequest.FromString,
                    response_serializer=marketdata_pb2.Snapshot.SerializeToString,
                ),
                "ListSymbols": grpc.unary_unary_rpc_method_handler(
                    self.list_symbols,
                    request_deserializer=marketdata_pb2.ListSymbolsRequest.FromString,
                    response_serializer=marketdata_pb2.ListSymbolsResponse.SerializeToString,
                ),
            },
        )


class MarketDataServer:
    """The running server: gRPC, the Redis fan-out task, health. start() then stop()."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.port = 0
        self._health = health.aio.HealthServicer()
        self.served = ServedSymbols(routed=config.routing_path is not None)
        self._link_up = False
        self._fanout = Fanout(
            config.redis_url, on_link_change=self._link_changed, served=self.served
        )
        # Snapshot reads wait for one of a few connections instead of failing when a
        # thousand clients subscribe at once.
        self._redis = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                config.redis_url, max_connections=config.redis_connections, timeout=10
            )
        )
        self.service = MarketDataService(config, self._redis, self._fanout, self.served)
        self._server: grpc.aio.Server | None = None
        self._fanout_task: asyncio.Task[None] | None = None
        self._routing_task: asyncio.Task[None] | None = None
        self._admissions: set[asyncio.Task[None]] = set()
        self._stopped = asyncio.Event()

    def _link_changed(self, up: bool) -> None:
        self._link_up = up
        self._report_health()

    def _report_health(self) -> None:
        # Not ready while Redis is unreachable, or before the routing table was read: an
        # orchestrator routes clients elsewhere.
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self._link_up and self.served.loaded
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            task = asyncio.ensure_future(self._health.set(name, status))
            task.add_done_callback(lambda t: t.exception())

    # --- the served set ------------------------------------------------------
    def apply_table(self, table: RoutingTable) -> None:
        """Serve the symbols of `table`: drop what is queued for departed ones now, and hand
        the stored values of newly served ones to the clients that follow them."""
        was_loaded = self.served.loaded
        change = self.served.apply(table)
        if change is None:
            return
        metrics.ROUTING_VERSION.set(table.version)
        metrics.SERVED_SYMBOLS.set(len(table.routes))
        log.info(
            "routing v%d: serving %d symbols (+%d -%d)",
            table.version,
            len(table.routes),
            len(change.added),
            len(change.removed),
        )
        self._fanout.forget(change.removed)
        if change.added:
            task = asyncio.create_task(self._admit(change.added), name="routing-admit")
            self._admissions.add(task)
            task.add_done_callback(self._admissions.discard)
        if not was_loaded:
            self._report_health()

    def _routing_error(self, exc: Exception) -> None:
        metrics.ROUTING_ERRORS.inc()

    async def _admit(self, symbols: frozenset[str]) -> None:
        # Pub/sub brings the next change; this brings the current value, as a new
        # subscriber would get it. dispatch() re-checks that each is still served.
        try:
            for update in await read_latest(self._redis, sorted(symbols), signalstore.KINDS):
                self._fanout.dispatch(update)
        except RedisError as exc:
            log.warning("could not read newly routed symbols %s: %s", sorted(symbols)[:5], exc)

    async def start(self) -> int:
        server = grpc.aio.server(options=self.config.grpc_options())
        server.add_generic_rpc_handlers((self.service.handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        address = f"{self.config.host}:{self.config.port}"
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc reports a failed bind this way
            raise OSError(f"cannot bind {address}: {exc}") from exc
        if self.port == 0:
            raise OSError(f"cannot bind {address}")
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self._fanout_task = asyncio.create_task(self._fanout.run(), name="redis-fanout")
        if self.config.routing_path is not None:
            self._routing_task = asyncio.create_task(
                watch_file(
                    self.config.routing_path,
                    self.apply_table,
                    self._routing_error,
                    self.config.routing_poll_s,
                ),
                name="routing",
            )
        await server.start()
        self._server = server
        log.info("serving %s on %s:%d", SERVICE_NAME, self.config.host, self.port)
        return self.port

    async def wait_linked(self) -> None:
        """Until the Redis pub/sub link is up (wrap in asyncio.timeout)."""
        await self._fanout.connected.wait()

    async def stop(self, grace: float | None = None) -> None:
        """Graceful: report NOT_SERVING, end streams with UNAVAILABLE, drain, then close."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        await self._health.enter_graceful_shutdown()
        self._fanout.close_all("server shutting down; reconnect")
        if self._server is not None:
            await self._server.stop(self.config.shutdown_grace_s if grace is None else grace)
        for task in (self._fanout_task, self._routing_task, *self._admissions):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._redis.aclose()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
        if self._server is not None:
            await self._server.wait_for_termination()
