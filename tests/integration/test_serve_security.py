"""The MarketData server's security against real clients on loopback and a real redis-server:
TLS (and a certificate rotated under open streams), mutual TLS, bearer tokens reloaded from
their file, permissions, per-identity quotas, reflection and the plaintext health port.

Every refusal is asserted with the status code a client sees; TLS handshake failures surface
as UNAVAILABLE (the connection never carries a call)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from quantcore.client.security import ClientCredentials
from quantcore.client.stream import MarketDataClient, Subscription
from quantcore.devservices import certs
from quantcore.devservices.ports import free_port
from quantcore.devservices.programs import ServeProcess, quantcore_argv
from quantcore.devservices.redis import RedisServer
from quantcore.redisacl import SERVE
from quantcore.serve.access import Limits
from quantcore.serve.credentials import TlsFiles
from quantcore.serve.server import SERVICE_NAME, MarketDataServer, ServerConfig
from quantcore.v1 import marketdata_pb2, marketdata_pb2_grpc
from tests.integration.signalsink import SignalSink
from tests.integration.test_serve import Updates, read_n
from tests.integration.test_serve_routing import until

pytestmark = pytest.mark.integration

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef00"
CAROL = "carol-token-0123456789abcdef"  # BTCUSDT only, no snapshots
TOKENS = f"""# identity token [permissions]
alice {ALICE}
bob {BOB}
carol {CAROL} symbols=BTCUSDT methods=Subscribe,ListSymbols
"""


@dataclass
class Pki:
    dir: Path
    ca: certs.Issued

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    def client(self, name: str, issued: certs.Issued) -> tuple[Path, Path]:
        certs.write_pair(self.dir / name, issued, "tls.crt", "tls.key")
        return self.dir / name / "tls.crt", self.dir / name / "tls.key"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A CA, and a server certificate for 127.0.0.1 in cert-manager's layout in tls/."""
    ca = certs.new_ca("test CA")
    server = certs.issue(ca, "serve", names=("localhost", "127.0.0.1"), server=True)
    certs.write_pair(tmp_path / "tls", server, "tls.crt", "tls.key")
    certs.write_public(tmp_path / "tls" / "ca.crt", ca.cert_pem)
    certs.write_public(tmp_path / "ca.crt", ca.cert_pem)
    return Pki(tmp_path, ca)


@pytest.fixture
async def sink(redis_server: RedisServer) -> AsyncIterator[SignalSink]:
    client = aioredis.Redis.from_url(redis_server.url)
    sink = SignalSink(client)
    await sink.book("BTCUSDT", 1, 60_000.0)
    await sink.book("ETHUSDT", 1, 3_000.0)
    try:
        yield sink
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def running(config: ServerConfig) -> AsyncIterator[MarketDataServer]:
    srv = MarketDataServer(config)
    await srv.start()
    async with asyncio.timeout(10):
        await srv.wait_linked()
    try:
        yield srv
    finally:
        await srv.stop(grace=1)


def secure_config(redis_url: str, pki: Pki, tokens: Path | None, **kw: Any) -> ServerConfig:
    return ServerConfig(
        redis_url=redis_url,
        host="127.0.0.1",
        port=0,
        tls=TlsFiles.from_dir(pki.dir / "tls", kw.pop("require_client_cert", False)),
        tokens_path=tokens,
        tokens_poll_s=0.05,
        **kw,
    )


def tokens_file(tmp_path: Path, text: str = TOKENS) -> Path:
    path = tmp_path / "tokens"
    path.write_text(text)
    return path


def target(srv: MarketDataServer) -> str:
    return f"127.0.0.1:{srv.port}"


def creds(pki: Pki, token: str | None = None, **kw: Any) -> ClientCredentials:
    return ClientCredentials(ca=pki.ca_file, token=token, **kw)


def refused_count(reason: str) -> float:
    value = REGISTRY.get_sample_value("quantcore_serve_refused_calls_total", {"reason": reason})
    return value or 0.0


async def code_of(call: Awaitable[Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code()


async def first_batch(channel: grpc.aio.Channel, c: ClientCredentials, **req: Any) -> Any:
    call = marketdata_pb2_grpc.MarketDataStub(channel).Subscribe(
        marketdata_pb2.SubscribeRequest(**req), metadata=c.metadata(), timeout=10
    )
    async for batch in call:
        call.cancel()
        return batch
    raise AssertionError("the stream ended without a batch")


# ---- tokens ---------------------------------------------------------------------------------


async def test_calls_without_a_valid_token_are_unauthenticated(
    redis_server: RedisServer, sink: SignalSink, pki: Pki, tmp_path: Path
) -> None:
    async with running(
        secure_config(redis_server.url_for(SERVE), pki, tokens_file(tmp_path))
    ) as srv:
        for token, reason in ((None, "missing_token"), ("not-a-token-of-ours-at-all", "bad_token")):
            before = refused_count(reason)
            c = creds(pki, token)
            async with c.channel(target(srv)) as channel:
                stub = marketdata_pb2_grpc.MarketDataStub(channel)
                assert await code_of(first_batch(channel, c)) == (grpc.StatusCode.UNAUTHENTICATED)
                snapshot = stub.GetSnapshot(
                    marketdata_pb2.SnapshotRequest(), metadata=c.metadata(), timeout=5
                )
                assert await code_of(snapshot) == grpc.StatusCode.UNAUTHENTICATED
                listing = stub.ListSymbols(
                    marketdata_pb2.ListSymbolsRequest(), metadata=c.metadata(), timeout=5
                )
                assert await code_of(listing) == grpc.StatusCode.UNAUTHENTICATED
            assert refused_count(reason) == before + 3

        c = creds(pki, ALICE)
        async with c.channel(target(srv)) as channel:
            batch = await first_batch(channel, c, symbols=["BTCUSDT"])
            assert [u.symbol for u in batch.updates] == ["BTCUSDT"]


async def test_permissions_narrow_symbols_and_methods(
    redis_server: RedisServer, sink: SignalSink, pki: Pki, tmp_path: Path
) -> None:
    async with running(
        secure_config(redis_server.url_for(SERVE), pki, tokens_file(tmp_path))
    ) as srv:
        c = creds(pki, CAROL)
        async with c.channel(target(srv)) as channel:
            stub = marketdata_pb2_grpc.MarketDataStub(channel)
            before = refused_count("symbol_denied")
            assert await code_of(first_batch(channel, c, symbols=["ETHUSDT"])) == (
                grpc.StatusCode.PERMISSION_DENIED
            )
            assert refused_count("symbol_denied") == before + 1
            # Asking for everything gives what the grant allows.
            batch = await first_batch(channel, c)
            assert {u.symbol for u in batch.updates} == {"BTCUSDT"}
            reply = await stub.ListSymbols(
                marketdata_pb2.ListSymbolsRequest(), metadata=c.metadata(), timeout=5
            )
            assert list(reply.symbols) == ["BTCUSDT"]
            before = refused_count("method_denied")
            snapshot = stub.GetSnapshot(
                marketdata_pb2.SnapshotRequest(symbols=["BTCUSDT"]), metadata=c.metadata()
            )
            assert await code_of(snapshot) == grpc.StatusCode.PERMISSION_DENIED
            assert refused_count("method_denied") == before + 1


async def test_a_token_added_to_the_file_is_accepted_without_restart(
    redis_server: RedisServer, sink: SignalSink, pki: Pki, tmp_path: Path
) -> None:
    path = tokens_file(tmp_path)
    dave = "dave-token-0123456789abcdef0"
    async with running(secure_config(redis_server.url_for(SERVE), pki, path)) as srv:
        c = creds(pki, dave)
        async with c.channel(target(srv)) as channel:
            stub = marketdata_pb2_grpc.MarketDataStub(channel)

            async def listing() -> grpc.StatusCode:
                try:
                    await stub.ListSymbols(
                        marketdata_pb2.ListSymbolsRequest(), metadata=c.metadata(), timeout=5
                    )
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
                return grpc.StatusCode.OK

            assert await listing() == grpc.StatusCode.UNAUTHENTICATED
            # Replaced in one rename, as a Secret volume swaps its data.
            fresh = tmp_path / "tokens.new"
            fresh.write_text(TOKENS + f"dave {dave}\n")
            fresh.replace(path)
            await until(lambda: _is(listing(), grpc.StatusCode.OK), "the new token to be accepted")
            # A broken file keeps the tokens in force.
            broken = tmp_path / "tokens.broken"
            broken.write_text("dave short\n")
            broken.replace(path)
            await until(
                lambda: _value(
                    REGISTRY.get_sample_value(
                        "quantcore_serve_token_reloads_total", {"outcome": "invalid"}
                    )
                    or 0
                ),
                "the broken token file to be noticed",
            )
            assert await listing() == grpc.StatusCode.OK


async def _is(coro: Any, expected: object) -> bool:
    return bool(await coro == expected)


async def _value(v: float) -> float:
    return v


# ---- quotas ---------------------------------------------------------------------------------


async def test_one_identity_cannot_take_every_stream(
    redis_server: RedisServer, sink: SignalSink, pki: Pki, tmp_path: Path
) -> None:
    config = secure_config(
        redis_server.url_for(SERVE),
        pki,
        tokens_file(tmp_path),
        limits=Limits(streams_per_identity=2),
    )
    async with running(config) as srv:
        alice, bob = creds(pki, ALICE), creds(pki, BOB)
        async with alice.channel(target(srv)) as channel:
            stub = marketdata_pb2_grpc.MarketDataStub(channel)

            def open_stream(c: ClientCredentials) -> Updates:
                return Updates(
                    stub.Subscribe(
                        marketdata_pb2.SubscribeRequest(symbols=["BTCUSDT"]), metadata=c.metadata()
                    )
                )

            held = [open_stream(alice), open_stream(alice)]
            for updates in held:
                await read_n(updates, 1)
            before = refused_count("stream_quota")
            third = open_stream(alice)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await read_n(third, 1)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "alice holds 2 open streams; the limit is 2 per identity" in (
                info.value.details() or ""
            )
            assert refused_count("stream_quota") == before + 1
            # Another identity is not affected; a closed stream frees its slot.
            await read_n(open_stream(bob), 1)
            held[0].cancel()
            await until(
                lambda: _value(srv.service.quotas.open_streams("alice") == 1), "a slot freed"
            )
            await read_n(open_stream(alice), 1)


async def test_one_stream_cannot_read_more_symbols_than_allowed(
    redis_server: RedisServer, sink: SignalSink, pki: Pki, tmp_path: Path
) -> None:
    config = secure_config(
        redis_server.url_for(SERVE), pki, tokens_file(tmp_path), limits=Limits(symbols_per_stream=1)
    )
    async with running(config) as srv:
        c = creds(pki, ALICE)
        async with c.channel(target(srv)) as channel:
            before = refused_count("symbol_quota")
            for request in ({"symbols": ["BTCUSDT", "ETHUSDT"]}, {}):  # named, or every symbol
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await first_batch(channel, c, **request)
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "2 symbols in one stream; the limit is 1" in (info.value.details() or "")
            assert refused_count("symbol_quota") == before + 2
            batch = await first_batch(channel, c, symbols=["ETHUSDT"])
            assert [u.symbol for u in batch.updates] == ["ETHUSDT"]


# ---- TLS ------------------------------------------------------------------------------------


async def test_a_plaintext_client_cannot_talk_to_the_tls_port(
    redis_server: RedisServer, sink: SignalSink, pki: Pki
) -> None:
    async with running(secure_config(redis_server.url_for(SERVE), pki, None)) as srv:
        async with grpc.aio.insecure_channel(target(srv)) as channel:
            listing = marketdata_pb2_grpc.MarketDataStub(channel).ListSymbols(
                marketdata_pb2.ListSymbolsRequest(), timeout=5
            )
            assert await code_of(listing) == grpc.StatusCode.UNAVAILABLE
        # Without a token file, any client that verifies the server is served.
        c = creds(pki)
        async with c.channel(target(srv)) as channel:
            reply = await marketdata_pb2_grpc.MarketDataStub(channel).ListSymbols(
                marketdata_pb2.ListSymbolsRequest(), timeout=5
            )
            assert list(reply.symbols) == ["BTCUSDT", "ETHUSDT"]


async def test_mutual_tls_refuses_missing_expired_and_foreign_client_certificates(
    redis_server: RedisServer, sink: SignalSink, pki: Pki, tmp_path: Path
) -> None:
    good = pki.client("good", certs.issue(pki.ca, "alice", client=True))
    expired = pki.client("expired", certs.expired(pki.ca, "alice", client=True))
    foreign = pki.client("foreign", certs.issue(certs.new_ca("other CA"), "alice", client=True))
    config = secure_config(
        redis_server.url_for(SERVE), pki, tokens_file(tmp_path), require_client_cert=True
    )
    async with running(config) as srv:
        cases: list[tuple[str, tuple[Path, Path] | None]] = [
            ("no client certificate", None),
            ("expired", expired),
            ("signed by another CA", foreign),
        ]
        for what, pair in cases:
            c = creds(pki, ALICE, cert=pair[0], key=pair[1]) if pair else creds(pki, ALICE)
            async with c.channel(target(srv)) as channel:
                listing = marketdata_pb2_grpc.MarketDataStub(channel).ListSymbols(
                    marketdata_pb2.ListSymbolsRequest(), metadata=c.metadata(), timeout=5
                )
                assert await code_of(listing) == grpc.StatusCode.UNAVAILABLE, what
        c = creds(pki, ALICE, cert=good[0], key=good[1])
        async with c.channel(target(srv)) as channel:
            batch = await first_batch(channel, c, symbols=["BTCUSDT"])
            assert [u.symbol for u in batch.updates] == ["BTCUSDT"]
            # The certificate gets through TLS; the token is still required.
            anonymous = ClientCredentials(ca=pki.ca_file, cert=good[0], key=good[1])
            assert await code_of(first_batch(channel, anonymous)) == (
                grpc.StatusCode.UNAUTHENTICATED
            )


async def test_a_rotated_certificate_reaches_new_connections_while_open_streams_flow(
    redis_server: RedisServer, sink: SignalSink, pki: Pki, tmp_path: Path
) -> None:
    async with running(
        secure_config(redis_server.url_for(SERVE), pki, tokens_file(tmp_path))
    ) as srv:
        old = creds(pki, ALICE)
        async with old.channel(target(srv)) as channel:
            stream = Updates(
                marketdata_pb2_grpc.MarketDataStub(channel).Subscribe(
                    marketdata_pb2.SubscribeRequest(symbols=["BTCUSDT"]), metadata=old.metadata()
                )
            )
            assert (await read_n(stream, 1))[0].sequence == 1

            # Renewal by another CA, so a client can tell which certificate it was shown.
            new_ca = certs.new_ca("renewed CA")
            renewed = certs.issue(new_ca, "serve", names=("127.0.0.1",), server=True)
            certs.write_pair(pki.dir / "tls", renewed, "tls.crt", "tls.key")
            new_ca_file = tmp_path / "new-ca.crt"
            new_ca_file.write_bytes(new_ca.cert_pem)
            new = ClientCredentials(ca=new_ca_file, token=ALICE)

            async def new_connection(c: ClientCredentials) -> grpc.StatusCode:
                async with c.channel(target(srv)) as ch:
                    try:
                        await marketdata_pb2_grpc.MarketDataStub(ch).ListSymbols(
                            marketdata_pb2.ListSymbolsRequest(), metadata=c.metadata(), timeout=5
                        )
                    except grpc.aio.AioRpcError as exc:
                        return exc.code()
                return grpc.StatusCode.OK

            await until(
                lambda: _is(new_connection(new), grpc.StatusCode.OK),
                "the renewed certificate served",
            )
            # The old CA no longer verifies what new connections are shown: no handshake.
            assert await new_connection(old) == grpc.StatusCode.UNAVAILABLE
            assert srv.certificates is not None
            assert srv.certificates.reloads == 1

            # The stream opened under the old certificate keeps flowing.
            for seq in range(2, 6):
                await sink.book("BTCUSDT", seq, 60_000.0 + seq)
            got = await read_n(stream, 4)
            assert [u.sequence for u in got] == [2, 3, 4, 5]
            stream.cancel()


# ---- reflection and health ------------------------------------------------------------------


async def reflection_services(channel: grpc.aio.Channel, metadata: Any = ()) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
        metadata=metadata,
        timeout=5,
    )
    async for reply in call:
        return [s.name for s in reply.list_services_response.service]
    return []


async def test_reflection_needs_a_token_and_can_be_switched_off(
    redis_server: RedisServer, sink: SignalSink, pki: Pki, tmp_path: Path
) -> None:
    tokens = tokens_file(tmp_path)
    c = creds(pki, ALICE)
    async with (
        running(secure_config(redis_server.url_for(SERVE), pki, tokens)) as srv,
        c.channel(target(srv)) as channel,
    ):
        assert SERVICE_NAME in await reflection_services(channel, c.metadata())
        assert await code_of(reflection_services(channel)) == grpc.StatusCode.UNAUTHENTICATED
    off = secure_config(redis_server.url_for(SERVE), pki, tokens, reflection=False)
    async with running(off) as srv, c.channel(target(srv)) as channel:
        assert await code_of(reflection_services(channel, c.metadata())) == (
            grpc.StatusCode.UNIMPLEMENTED
        )


async def test_health_answers_in_plaintext_on_its_own_port_and_over_tls_without_a_token(
    redis_server: RedisServer, sink: SignalSink, pki: Pki, tmp_path: Path
) -> None:
    config = secure_config(redis_server.url_for(SERVE), pki, tokens_file(tmp_path), health_port=0)
    async with running(config) as srv:
        assert srv.health_port not in (0, srv.port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.health_port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            # Only health there: the market data is not reachable in plaintext.
            listing = marketdata_pb2_grpc.MarketDataStub(channel).ListSymbols(
                marketdata_pb2.ListSymbolsRequest(), timeout=5
            )
            assert await code_of(listing) == grpc.StatusCode.UNIMPLEMENTED
        c = creds(pki)
        async with c.channel(target(srv)) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


# ---- the real `quantcore serve` -------------------------------------------------------------


@pytest.fixture
def local_set(tmp_path: Path) -> certs.LocalCredentials:
    creds_, reused = certs.local_credentials(tmp_path / "local")
    assert not reused
    return creds_


async def test_quantcore_serve_with_tls_dir_and_tokens(
    redis_server: RedisServer,
    sink: SignalSink,
    local_set: certs.LocalCredentials,
    tmp_path: Path,
) -> None:
    """The command line `quantcore up` and the operator use: --tls-dir, --tokens, mTLS, and the
    client library's credentials; the same set is reused by a second `local_credentials`."""
    assert certs.local_credentials(local_set.directory)[1] is True
    proc = ServeProcess(
        redis_server.address,
        free_port(),
        tmp_path / "serve.log",
        "--tls-dir",
        str(local_set.directory),
        "--tls-client-auth",
        "require",
        "--tokens",
        str(local_set.tokens),
        redis_auth=redis_server.auth(SERVE),
    )
    await asyncio.to_thread(proc.__enter__)
    try:
        assert "(TLS with client certificates, bearer tokens)" in proc.log.read_text()
        token = local_set.client_token.read_text().strip()
        good = ClientCredentials(
            ca=local_set.ca, cert=local_set.client_cert, key=local_set.client_key, token=token
        )
        client = MarketDataClient(proc.target, Subscription(symbols=("BTCUSDT",)), credentials=good)
        async with asyncio.timeout(30):
            update = await anext(client.updates())
        assert update.symbol == "BTCUSDT"
        no_token = ClientCredentials(
            ca=local_set.ca, cert=local_set.client_cert, key=local_set.client_key
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async with asyncio.timeout(30):
                await anext(MarketDataClient(proc.target, credentials=no_token).updates())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await asyncio.to_thread(proc.kill)


def test_quantcore_serve_refuses_to_start_without_tls_or_insecure(
    redis_server: RedisServer,
) -> None:
    run = subprocess.run(
        quantcore_argv("serve", "--redis", redis_server.address, "--port", "0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "no TLS certificate" in run.stderr
    assert "--insecure" in run.stderr
