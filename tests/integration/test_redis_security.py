"""The signal store's security on a real redis-server: TLS only, and each ACL user
(quantcore.redisacl) allowed what its code does and refused everything else.

Every refusal is asserted on its own: no AUTH, plaintext to the TLS port, a wrong password,
the serving user writing or publishing, the relay flushing, configuring or leaving its keys.
The allowed flows run as the pipeline runs them: the relay's compare-and-set and PUBLISH
(SignalWriter), serving's snapshot reads and pattern subscription (the server's own code).
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from quantcore import signalstore
from quantcore.devservices.redis import RedisServer
from quantcore.redisacl import RELAY, SERVE
from quantcore.serve.snapshot import list_symbols, read_latest
from quantcore.signalstore import SignalWriter

pytestmark = pytest.mark.integration


def _client(server: RedisServer, user: str) -> redis.Redis:
    return redis.Redis.from_url(server.url_for(user), socket_timeout=5)


@pytest.fixture
def relay(redis_service: RedisServer):
    c = _client(redis_service, RELAY)
    yield c
    c.close()


@pytest.fixture
def serve(redis_service: RedisServer):
    c = _client(redis_service, SERVE)
    yield c
    c.close()


def _symbol() -> str:
    return f"S{uuid.uuid4().hex[:8].upper()}"


# --- who gets in ---------------------------------------------------------------------------


def test_a_client_without_auth_is_refused(redis_service: RedisServer) -> None:
    ca = redis_service.auth(SERVE).ca_file
    # RESP2: the connection opens (TLS is fine) and the first command meets NOAUTH (which
    # redis-py raises as AuthenticationError, "Authentication required.").
    anonymous = redis.Redis.from_url(redis_service.address, ssl_ca_certs=ca, protocol=2)
    with pytest.raises(AuthenticationError, match="Authentication required"):
        anonymous.get(signalstore.state_key("BTCUSDT"))
    anonymous.close()
    # RESP3 (redis-py's HELLO 3 on connect): refused before any command.
    with pytest.raises(AuthenticationError):
        redis.Redis.from_url(redis_service.address, ssl_ca_certs=ca).ping()


def test_the_default_user_is_off(redis_service: RedisServer) -> None:
    client = redis.Redis.from_url(redis_service.url)
    rules: dict[str, Any] = client.acl_getuser("default")  # type: ignore[assignment]
    client.close()
    assert "off" in rules["flags"]
    assert "nopass" not in rules["flags"]
    assert rules["passwords"] == []


def test_a_wrong_password_is_refused(redis_service: RedisServer) -> None:
    ca = redis_service.auth(SERVE).ca_file
    for user in (RELAY, SERVE, "default"):
        client = redis.Redis.from_url(
            redis_service.address, username=user, password="not-it", ssl_ca_certs=ca
        )
        with pytest.raises(AuthenticationError):
            client.ping()
        client.close()


def test_a_plaintext_client_to_the_tls_port_is_refused(redis_service: RedisServer) -> None:
    auth = redis_service.auth(SERVE)
    plaintext = redis.Redis(
        host="127.0.0.1",
        port=redis_service.port,
        username=auth.username,
        password=auth.password,
        socket_timeout=5,
        socket_connect_timeout=5,
    )
    with pytest.raises(redis.ConnectionError):
        plaintext.ping()
    plaintext.close()


def test_a_client_that_does_not_trust_the_ca_is_refused(redis_service: RedisServer) -> None:
    auth = redis_service.auth(SERVE)
    # The system's CAs only: the server's certificate does not verify.
    client = redis.Redis.from_url(
        redis_service.address, username=auth.username, password=auth.password
    )
    with pytest.raises(redis.ConnectionError) as failure:
        client.ping()
    client.close()
    assert isinstance(failure.value.__cause__ or failure.value.__context__, ssl.SSLError) or (
        "certificate verify failed" in str(failure.value)
    )


# --- the serving tier: reads and its subscription only -------------------------------------


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("HSET", (signalstore.state_key("BTCUSDT"), "book_seq", "1")),
        ("SET", (signalstore.state_key("BTCUSDT"), "x")),
        ("DEL", (signalstore.state_key("BTCUSDT"),)),
        ("FLUSHALL", ()),
        ("PUBLISH", (signalstore.channel("BTCUSDT"), "forged")),
        ("SADD", (signalstore.SYMBOLS_KEY, "FORGED")),
        ("EVALSHA", ("0" * 40, "0")),
        ("CONFIG", ("GET", "requirepass")),
        ("KEYS", ("*",)),
        ("SUBSCRIBE", ("some-other-channel",)),
    ],
)
def test_the_serving_user_may_not(serve: redis.Redis, command: str, args: tuple[str, ...]) -> None:
    with pytest.raises(NoPermissionError):
        serve.execute_command(command, *args)


def test_the_serving_user_may_not_read_outside_the_signal_store(serve: redis.Redis) -> None:
    with pytest.raises(NoPermissionError):
        serve.hmget("other:key", ["a"])
    with pytest.raises(NoPermissionError):
        serve.execute_command("PSUBSCRIBE", "*")


# --- the relay: its script, its keys, its channels -----------------------------------------


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("FLUSHALL", ()),
        ("FLUSHDB", ()),
        ("CONFIG", ("SET", "maxmemory", "1")),
        ("KEYS", ("*",)),
        ("SCRIPT", ("FLUSH",)),
        ("EVAL", ("return 1", "0")),
        ("SET", ("other:key", "x")),
        ("HSET", ("other:key", "f", "v")),
        ("DEL", (signalstore.state_key("BTCUSDT"),)),
        ("PUBLISH", ("other-channel", "x")),
        ("ACL", ("SETUSER", "relay", "+@all")),
        ("SUBSCRIBE", (signalstore.channel("BTCUSDT"),)),
    ],
)
def test_the_relay_user_may_not(relay: redis.Redis, command: str, args: tuple[str, ...]) -> None:
    with pytest.raises(NoPermissionError):
        relay.execute_command(command, *args)


def test_the_relay_script_cannot_reach_outside_the_relay_keys(relay: redis.Redis) -> None:
    # The compare-and-set runs as the relay: keys outside its patterns fail inside Lua too.
    sha = relay.script_load(signalstore.CAS_SCRIPT)
    with pytest.raises(NoPermissionError, match="no permissions to access one of the keys"):
        relay.evalsha(sha, 2, "other:key", signalstore.SYMBOLS_KEY, "book", "1", b"x", "X", "c")
    sym = _symbol()
    with pytest.raises(ResponseError, match="can't publish to the channel"):
        relay.evalsha(
            sha, 2, signalstore.state_key(sym), signalstore.SYMBOLS_KEY,
            "book", "1", b"x", sym, "other-channel",
        )  # fmt: skip


# --- what each is for works ------------------------------------------------------------------


def test_relay_compare_and_set_reaches_a_serving_subscriber(
    redis_service: RedisServer, relay: redis.Redis
) -> None:
    symbol = _symbol()
    admin = redis.Redis.from_url(redis_service.url)
    admin.acl_log_reset()  # the refusals above are logged there; this flow must add none

    async def scenario() -> tuple[list[bytes], list[str], dict[str, int]]:
        auth = redis_service.auth(SERVE)
        client = aioredis.Redis.from_url(redis_service.address, **auth.client_kwargs())
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.psubscribe(signalstore.UPDATES_PATTERN)  # as quantcore.serve.fanout does
        # A script flush (as after a Redis restart) makes the writer SCRIPT LOAD again.
        admin.script_flush()
        writer = SignalWriter(relay)
        await asyncio.to_thread(writer.write, symbol, "book", 5, b"five")
        accepted = await asyncio.to_thread(
            writer.write_many,
            [
                signalstore.Update(symbol, "book", 4, b"four"),
                signalstore.Update(symbol, "book", 6, b"six"),
            ],
        )
        assert accepted == [False, True]
        await asyncio.to_thread(writer.record_malformed, "book", 0, 1)
        heard: list[bytes] = []
        async with asyncio.timeout(10):
            while len(heard) < 2:
                message = await pubsub.get_message(timeout=1)
                if message is not None and message["type"] == "pmessage":
                    heard.append(message["data"])
        symbols = await list_symbols(client)  # SMEMBERS
        latest = await read_latest(client, [symbol], signalstore.KINDS)  # HMGET
        await pubsub.aclose()
        await client.aclose()
        return heard, symbols, {u.kind: u.sequence for u in latest}

    heard, symbols, latest = asyncio.run(scenario())
    assert heard == [b"five", b"six"]
    assert symbol in symbols
    assert latest == {"book": 6}
    # Not one refusal on the way, not even one redis-py would have swallowed.
    assert admin.acl_log() == []
    admin.close()
