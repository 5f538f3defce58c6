"""The MarketData gRPC service (grpc.aio): snapshot then stream, history from the lake,
health, reflection, limits, TLS and bearer tokens (quantcore.serve.access decides,
quantcore.serve.credentials reads the files).

Subscribe forwards the sink's bytes (plus the server's hop stamps), so the response
serializer is the identity; requests are decoded with the generated messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import redis.asyncio as aioredis
from google.protobuf.field_mask_pb2 import FieldMask
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from redis.exceptions import RedisError

from quantcore import historyrows, lakemirror, lakequery, lakereader, signalstore
from quantcore.redisauth import RedisAuth
from quantcore.routing import RoutingTable
from quantcore.serve import encoding, metrics
from quantcore.serve.access import ANONYMOUS, Limits, Quotas, Refused, authenticate, authorize
from quantcore.serve.conflation import ConflatingQueue, QueueClosed
from quantcore.serve.credentials import CertificateFiles, TlsFiles, read_tokens, watch_tokens
from quantcore.serve.fanout import Fanout, Subscription
from quantcore.serve.historycall import HistoryLimits, HistoryRequestError, checked, page_token
from quantcore.serve.served import FileSignature, ServedSymbols, signature, watch_file
from quantcore.serve.snapshot import list_symbols, read_latest
from quantcore.serve.tokens import Grant, TokenTable
from quantcore.v1 import marketdata_pb2, signals_pb2

log = logging.getLogger(__name__)

SERVICE_NAME = marketdata_pb2.DESCRIPTOR.services_by_name["MarketData"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
_SYMBOL = re.compile(r"^[A-Z0-9]{1,32}$")


@dataclass(frozen=True)
class ServerConfig:
    redis_url: str
    # The serving tier's own ACL user (quantcore.redisacl.SERVE: reads and PSUBSCRIBE only)
    # and Redis's CA.
    redis_auth: RedisAuth = field(default_factory=RedisAuth)
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
    # TLS on the gRPC port (None: plaintext); the files are re-read when they change.
    tls: TlsFiles | None = None
    # Bearer tokens (quantcore.serve.tokens format; None: no authentication).
    tokens_path: Path | None = None
    tokens_poll_s: float = 0.5
    limits: Limits = field(default_factory=Limits)
    reflection: bool = True
    # A plaintext port serving only gRPC health, for probes that cannot speak TLS (kubelet).
    health_port: int | None = None
    # The lake History reads (a local directory, quantcore.lake's layout); None: History
    # answers FAILED_PRECONDITION.
    lake_path: Path | None = None
    # A lake on S3 (`s3a://bucket/prefix`) read through a local mirror in `lake_path`
    # (quantcore.lakemirror): each read copies the committed files it needs first.
    lake_uri: str = ""
    lake_cache_bytes: int = 1 << 30
    history: HistoryLimits = field(default_factory=HistoryLimits)
    # DuckDB reads at once, and the threads each may use: the live streams share the cores.
    history_reads: int = 2
    history_threads: int = 2

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
        tokens: TokenTable | None = None,
    ) -> None:
        self._config = config
        self._redis = redis
        self._fanout = fanout
        self._served = served or ServedSymbols(routed=False)
        self._active = 0
        # None: authentication off. Replaced whole when the token file changes.
        self.tokens = tokens
        self.quotas = Quotas(config.limits)
        self._history_reads = asyncio.Semaphore(config.history_reads)
        self._lake_root = str(config.lake_path.absolute()) if config.lake_path is not None else None
        self._mirror = (
            lakemirror.Mirror(config.lake_uri, config.lake_path, max_bytes=config.lake_cache_bytes)
            if config.lake_uri and config.lake_path is not None
            else None
        )

    async def _refuse(self, context: grpc.aio.ServicerContext, refused: Refused) -> None:
        metrics.REFUSED_CALLS.labels(refused.reason).inc()
        await context.abort(refused.code, refused.message)

    def _grant(
        self, context: grpc.aio.ServicerContext, method: str, symbols: frozenset[str] | None
    ) -> tuple[Grant, frozenset[str] | None]:
        """The caller's grant and the symbols it may read of those asked; Refused if none."""
        grant = authenticate(self.tokens, context.invocation_metadata() or ())
        return grant, authorize(grant, method, symbols)

    async def _symbol_count(self, symbols: frozenset[str] | None) -> int:
        if symbols is not None:
            return len(symbols)
        served = self._served.symbols
        return len(served) if served is not None else len(await list_symbols(self._redis))

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
        try:
            grant, symbols = self._grant(context, "Subscribe", symbols)
        except Refused as refused:
            await self._refuse(context, refused)
            return
        if self._active >= self._config.max_streams:
            metrics.REJECTED_STREAMS.inc()
            log.warning(
                "stream refused: at the limit of %d",
                self._config.max_streams,
                extra={"event": "stream_refused", "peer": context.peer()},
            )
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"server at its limit of {self._config.max_streams} streams",
            )
            return
        try:
            wanted = 0
            if grant is not ANONYMOUS and self._config.limits.symbols_per_stream:
                wanted = await self._symbol_count(symbols)
            self.quotas.open(grant, wanted)
        except Refused as refused:
            await self._refuse(context, refused)
            return
        except RedisError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"signal store unreachable: {exc}")
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
                log.warning(
                    "stream dropped: signal store unreachable: %s",
                    exc,
                    extra={
                        "event": "stream_dropped",
                        "reason": "store_unavailable",
                        "peer": context.peer(),
                    },
                )
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"signal store unreachable: {exc}")
                return
            conflated = 0
            while True:
                try:
                    updates = await queue.get_many(self._config.max_batch)
                except QueueClosed as exc:
                    metrics.STREAMS_DROPPED.labels("queue_closed").inc()
                    log.info(
                        "stream dropped: %s",
                        exc,
                        extra={
                            "event": "stream_dropped",
                            "reason": "queue_closed",
                            "peer": context.peer(),
                        },
                    )
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
            self.quotas.close(grant)
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
            _, symbols = self._grant(context, "GetSnapshot", symbols)
        except Refused as refused:
            await self._refuse(context, refused)
            raise
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
            _, allowed = self._grant(context, "ListSymbols", None)
        except Refused as refused:
            await self._refuse(context, refused)
            raise
        try:
            names = await self._names(None)
            if allowed is not None:
                names = [n for n in names if n in allowed]
        except RedisError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"signal store unreachable: {exc}")
            raise
        return marketdata_pb2.ListSymbolsResponse(symbols=names)

    async def history(
        self, request: marketdata_pb2.HistoryRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[marketdata_pb2.HistoryPage]:
        try:
            grant = authenticate(self.tokens, context.invocation_metadata() or ())
            # The method before the request: a caller without History learns no more.
            authorize(grant, "History", None)
        except Refused as refused:
            await self._refuse(context, refused)
            return
        root = self._lake_root
        try:
            call = checked(request, self._config.history, root or "")
        except HistoryRequestError as exc:
            metrics.HISTORY_CALLS.labels("invalid").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        try:
            authorize(grant, "History", frozenset({call.symbol}))
        except Refused as refused:
            await self._refuse(context, refused)
            return
        if root is None:
            metrics.HISTORY_CALLS.labels("no_lake").inc()
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this server has no lake: History needs `quantcore serve --lake DIR`",
            )
            return
        connection = lakereader.connect(self._config.history_threads)
        try:
            async with self._history_reads:
                if self._mirror is not None:
                    span = call.span
                    await asyncio.to_thread(
                        self._mirror.sync, call.kind, call.symbol, span.first_day, span.last_day
                    )
                plan = await asyncio.to_thread(
                    lakereader.plan,
                    Path(root),
                    call.kind,
                    call.symbol,
                    call.span,
                    call.fields,
                    connection=connection,
                )
        except lakereader.NothingStored:
            # An answer, not an error: no rows. One empty page says so.
            metrics.HISTORY_CALLS.labels("complete").inc()
            connection.close()
            yield marketdata_pb2.HistoryPage()
            return
        except lakequery.QueryError as exc:
            metrics.HISTORY_CALLS.labels("invalid").inc()
            connection.close()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        except Exception as exc:  # the lake's files, or DuckDB reading them
            metrics.HISTORY_CALLS.labels("failed").inc()
            connection.close()
            log.warning("history read failed: %s", exc, extra={"event": "history_failed"})
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the lake could not be read: {exc}")
            return
        wires = [historyrows.wire_type(t) for t in plan.column_types]
        # Until the call ends on its own: a client that leaves mid-call is "abandoned".
        sent, outcome = 0, "abandoned"
        try:
            reader: lakereader.PageReader | None = None
            while True:
                started = time.perf_counter()
                try:
                    async with self._history_reads:
                        if reader is None:  # the call's one query
                            reader = await asyncio.to_thread(
                                lakereader.PageReader,
                                plan,
                                call.after,
                                call.max_rows,
                                connection=connection,
                            )
                        page = await asyncio.to_thread(reader.page, call.page_size)
                except Exception as exc:  # retention removed a file mid-call, a bad file
                    outcome = "failed"
                    log.warning("history read failed: %s", exc, extra={"event": "history_failed"})
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE,
                        f"the lake could not be read ({exc}); resume with the last page's token",
                    )
                    return
                metrics.HISTORY_PAGE_SECONDS.observe(time.perf_counter() - started)
                sent += len(page.rows)
                token = ""
                if page.more and page.last is not None:
                    token = page_token(page.last, call.fingerprint, root)
                yield marketdata_pb2.HistoryPage(
                    columns=historyrows.encode_columns(plan.columns, wires, page.rows),
                    row_count=len(page.rows),
                    next_page_token=token,
                )
                metrics.HISTORY_ROWS.inc(len(page.rows))
                if not token:
                    outcome = "complete"
                    return
                if sent >= call.max_rows:
                    outcome = "truncated"  # the row limit per call: the token goes on
                    return
        finally:
            metrics.HISTORY_CALLS.labels(outcome).inc()
            connection.close()

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
                "History": grpc.unary_stream_rpc_method_handler(
                    self.history,
                    request_deserializer=marketdata_pb2.HistoryRequest.FromString,
                    response_serializer=marketdata_pb2.HistoryPage.SerializeToString,
                ),
            },
        )


class AuthenticateOtherServices(grpc.aio.ServerInterceptor):
    """Reflection (and any other service but MarketData, which checks its own callers, and
    Health, which probes must reach) needs a valid token when authentication is on."""

    def __init__(self, tokens: Callable[[], TokenTable | None]) -> None:
        self._tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method or ""
        service = method.lstrip("/").split("/", 1)[0]
        if handler is None or service in (SERVICE_NAME, HEALTH_SERVICE_NAME):
            return handler
        try:
            authenticate(self._tokens(), handler_call_details.invocation_metadata or ())
        except Refused as refused:
            metrics.REFUSED_CALLS.labels(refused.reason).inc()
            return _refusing(handler, refused)
        return handler


def _refusing(handler: grpc.RpcMethodHandler, refused: Refused) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers `refused`."""

    async def abort(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(refused.code, refused.message)

    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return make(
        abort,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class MarketDataServer:
    """The running server: gRPC, the Redis fan-out task, health. start() then stop()."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.port = 0
        self._health = health.aio.HealthServicer()
        self.served = ServedSymbols(routed=config.routing_path is not None)
        self._tokens_seen: FileSignature | None = None
        self._link_up = False
        self._fanout = Fanout(
            config.redis_url,
            auth=config.redis_auth,
            on_link_change=self._link_changed,
            served=self.served,
        )
        # Snapshot reads wait for one of a few connections instead of failing when a
        # thousand clients subscribe at once.
        self._redis = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                config.redis_url,
                max_connections=config.redis_connections,
                timeout=10,
                **config.redis_auth.client_kwargs(),
            )
        )
        # A malformed token file or TLS pair fails here, at start, not at the first call.
        tokens = None
        if config.tokens_path is not None:
            # Signature first: a change while reading is then seen by the watcher.
            self._tokens_seen = signature(config.tokens_path)
            tokens = read_tokens(config.tokens_path)
        self.certificates = CertificateFiles(config.tls) if config.tls is not None else None
        self.service = MarketDataService(config, self._redis, self._fanout, self.served, tokens)
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self.health_port = 0
        self._tokens_task: asyncio.Task[None] | None = None
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
            extra={
                "event": "routing",
                "routing_version": table.version,
                "symbols": len(table.routes),
                "added": sorted(change.added),
                "removed": sorted(change.removed),
            },
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
            log.warning(
                "could not read newly routed symbols %s: %s",
                sorted(symbols)[:5],
                exc,
                extra={"added": sorted(symbols)},
            )

    def _set_tokens(self, table: TokenTable) -> None:
        self.service.tokens = table

    async def start(self) -> int:
        server = grpc.aio.server(
            options=self.config.grpc_options(),
            interceptors=[AuthenticateOtherServices(lambda: self.service.tokens)],
        )
        server.add_generic_rpc_handlers((self.service.handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if self.config.reflection:
            reflection.enable_server_reflection(
                (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
            )
        self.port = _bind(
            server,
            f"{self.config.host}:{self.config.port}",
            self.certificates.server_credentials() if self.certificates else None,
        )
        if self.config.health_port is not None:
            # Health alone, plaintext: kubelet's gRPC probe speaks no TLS. It tells no more
            # than the readiness a Service already exposes.
            health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self._health, health_server)
            self.health_port = _bind(
                health_server, f"{self.config.host}:{self.config.health_port}", None
            )
            self._health_server = health_server
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
        if self.config.tokens_path is not None:
            self._tokens_task = asyncio.create_task(
                watch_tokens(
                    self.config.tokens_path,
                    self._set_tokens,
                    self.config.tokens_poll_s,
                    self._tokens_seen,
                ),
                name="tokens",
            )
        await server.start()
        self._server = server
        if self._health_server is not None:
            await self._health_server.start()
        log.info(
            "serving %s on %s:%d",
            SERVICE_NAME,
            self.config.host,
            self.port,
            extra={"port": self.port},
        )
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
        if self._health_server is not None:
            await self._health_server.stop(0)
        for task in (self._fanout_task, self._routing_task, self._tokens_task, *self._admissions):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._redis.aclose()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
        if self._server is not None:
            await self._server.wait_for_termination()


def _bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # grpc reports a failed bind this way
        raise OSError(f"cannot bind {address}: {exc}") from exc
    if port == 0:
        raise OSError(f"cannot bind {address}")
    return port
