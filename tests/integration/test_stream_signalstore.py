"""The Lua compare-and-set against a real redis-server: only newer sequences are stored and
published, as one atomic step. The writer is the relay's ACL user over TLS, as in the job;
`client` (admin) inspects and flushes."""

from __future__ import annotations

import uuid

import pytest
import redis

from quantcore import signalstore
from quantcore.redisacl import RELAY
from quantcore.signalstore import SignalWriter, Update, read_snapshot

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def relay(redis_service):
    """A client as the relay's user: what SignalWriter runs as in the stream job."""
    c = redis.Redis.from_url(redis_service.url_for(RELAY))
    yield c
    c.close()


def _drain(pubsub) -> list[bytes]:
    out = []
    while (msg := pubsub.get_message(timeout=0.2)) is not None:
        if msg["type"] == "message":
            out.append(msg["data"])
    return out


def test_only_newer_sequences_are_stored_and_published(client, relay):
    symbol = f"T{uuid.uuid4().hex[:8].upper()}"
    writer = SignalWriter(relay)
    pubsub = client.pubsub()
    pubsub.subscribe(signalstore.channel(symbol))
    pubsub.get_message(timeout=1)  # the subscribe confirmation

    assert writer.write(symbol, "book", 10, b"ten")
    assert not writer.write(symbol, "book", 10, b"ten again")  # duplicate
    assert not writer.write(symbol, "book", 9, b"nine")  # stale
    assert writer.write(symbol, "book", 11, b"eleven")
    assert writer.write(symbol, "trades", 3, b"t3")  # kinds are independent

    assert _drain(pubsub) == [b"ten", b"eleven", b"t3"]
    snap = read_snapshot(client, symbol)
    assert snap["book"].sequence == 11
    assert snap["book"].payload == b"eleven"
    assert snap["trades"].sequence == 3
    assert client.sismember(signalstore.SYMBOLS_KEY, symbol)
    pubsub.close()


def test_sequences_beyond_double_precision_compare_exactly(client, relay):
    symbol = f"B{uuid.uuid4().hex[:8].upper()}"
    writer = SignalWriter(relay)
    big = 2**53 + 1  # a Lua number would round this to 2**53
    assert writer.write(symbol, "book", big - 1, b"a")
    assert writer.write(symbol, "book", big, b"b")
    assert not writer.write(symbol, "book", big - 1, b"a")
    assert writer.write(symbol, "book", 10 * big, b"c")  # more digits is larger
    assert read_snapshot(client, symbol)["book"].sequence == 10 * big


def test_script_reloads_after_script_flush(client, relay):
    symbol = f"F{uuid.uuid4().hex[:8].upper()}"
    writer = SignalWriter(relay)
    assert writer.write(symbol, "book", 1, b"x")
    client.script_flush()
    assert writer.write(symbol, "book", 2, b"y")  # EVALSHA misses, the script is loaded again


def test_a_pipelined_burst_applies_each_update_on_its_own(client, relay):
    symbol = f"P{uuid.uuid4().hex[:8].upper()}"
    writer = SignalWriter(relay)
    pubsub = client.pubsub()
    pubsub.subscribe(signalstore.channel(symbol))
    pubsub.get_message(timeout=1)
    burst = [Update(symbol, "book", seq, str(seq).encode()) for seq in (5, 7, 6, 7, 8, 1)]
    client.config_resetstat()
    assert writer.write_many(burst) == [True, True, False, False, True, False]
    # One round trip of EVALSHAs: no SCRIPT EXISTS before the burst.
    assert not any(name.startswith("cmdstat_script") for name in client.info("commandstats"))
    client.script_flush()  # the next burst loads the script again
    assert writer.write_many([Update(symbol, "book", 9, b"9")]) == [True]
    assert writer.write_many([]) == []
    assert _drain(pubsub) == [b"5", b"7", b"8", b"9"]
    assert read_snapshot(client, symbol)["book"].sequence == 9
    pubsub.close()


def test_bad_arguments_are_refused_before_redis(client, relay):
    writer = SignalWriter(relay)
    with pytest.raises(ValueError, match="unknown kind"):
        writer.write("X", "quotes", 1, b"")
    with pytest.raises(ValueError, match="negative"):
        writer.write("X", "book", -1, b"")


def test_malformed_records_count_once_per_kafka_coordinate(client, relay):
    before = signalstore.malformed_count(client)
    writer = SignalWriter(relay)
    topic = f"t-{uuid.uuid4().hex[:6]}"
    writer.record_malformed(topic, 0, 5)
    writer.record_malformed(topic, 0, 5)  # replayed after a restart
    writer.record_malformed(topic, 1, 5)
    assert signalstore.malformed_count(client) == before + 2
