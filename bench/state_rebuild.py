"""How fast the relay gives a restarted Redis its serving state back (quantcore.stream.rebuild).

A signals topic holds `--records` rows of `--symbols` symbols (book and trade flow, as the
stream job writes them), on a real Kafka broker and Redis. The relay applies them all (the
baseline: its live apply rate over the same records), then Redis restarts empty and the relay
rebuilds: printed are the time from Redis answering again to every symbol and kind being back,
and the rebuild's read rate against the baseline.

    python -m bench.state_rebuild [--records 200000] [--symbols 30] [--partitions 4]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

from quantcore import signalstore
from quantcore.devservices.kafka import KafkaBroker
from quantcore.devservices.redis import RedisServer
from quantcore.events import Topics
from quantcore.kafkaacl import STREAM
from quantcore.redisacl import RELAY
from quantcore.stream.relay import Relay, RelayConfig

BOOK_FIELDS = ("best_bid", "best_ask", "mid", "microprice", "spread", "obi_1", "obi_5", "obi_10")
FLOW_FIELDS = ("tfi_1s", "tfi_5s", "tfi_30s", "volume_1s", "volume_5s", "volume_30s")


def row(symbol: str, kind: str, sequence: int, rng: random.Random) -> bytes:
    fields = BOOK_FIELDS if kind == "book" else FLOW_FIELDS
    body = {
        "kind": kind,
        "valid": True,
        "topic": kind,
        "partition": 0,
        "offset": sequence,
        "symbol": symbol,
        "sequence": sequence,
        "event_time_ms": 1_723_075_200_000 + sequence,
        "exchange_event_ns": 1_723_075_200_000_000_000 + sequence * 1_000_000,
        "feed_receive_ns": time.time_ns(),
        "feed_publish_ns": time.time_ns(),
        "kafka_append_ns": time.time_ns(),
        **{name: rng.uniform(-1, 60_000) for name in fields},
    }
    return json.dumps(body).encode()


def wait(cond: Callable[[], bool], what: str, timeout: float = 600) -> float:
    start = time.perf_counter()
    while not cond():
        if time.perf_counter() - start > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--symbols", type=int, default=30)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    rng = random.Random(7)
    symbols = [f"S{i:03d}USDT" for i in range(args.symbols)]
    with tempfile.TemporaryDirectory() as work:
        kafka = KafkaBroker(Path(work) / "kafka")
        store = RedisServer(Path(work) / "redis")
        kafka.start()
        store.start()
        try:
            topics = Topics.with_prefix(f"b{uuid.uuid4().hex[:6]}")
            kafka.grant(topics)
            admin = AdminClient(kafka.client_config("admin"))
            for future in admin.create_topics(
                [NewTopic(topics.signals, args.partitions, 1)]
            ).values():
                future.result(30)
            producer = Producer({**kafka.client_config("admin"), "linger.ms": 20})
            newest: dict[tuple[str, str], int] = {}
            for n in range(args.records):
                symbol = symbols[n % len(symbols)]
                # A trade-flow row for every two book rows, of every symbol.
                kind = "book" if (n // len(symbols)) % 3 else "trades"
                producer.produce(topics.signals, row(symbol, kind, n, rng), symbol)
                newest[(symbol, kind)] = n
                if n % 10_000 == 0:
                    producer.poll(0)
            producer.flush(120)

            config = RelayConfig(
                kafka.bootstrap,
                store.address,
                topics.signals,
                store.auth(RELAY),
                kafka.auth(STREAM),
            )
            admin_redis = redis.Redis.from_url(store.url)

            def restored() -> bool:
                for symbol in symbols:
                    held = signalstore.read_snapshot(admin_redis, symbol)
                    for kind in ("book", "trades"):
                        if held.get(kind) is None or held[kind].sequence != newest[(symbol, kind)]:
                            return False
                return True

            relay = Relay(config).start()
            try:
                applied_s = wait(lambda: relay.applied >= args.records, "the live apply")
                wait(restored, "the state after the live apply")
                admin_redis.close()
                store.stop()
                store.start()
                admin_redis = redis.Redis.from_url(store.url)
                back_s = wait(restored, "the rebuilt state")
                rebuild = relay.rebuild
                assert rebuild is not None
                wait(rebuild.done, "the rebuild's end")
                assert rebuild.failure is None, rebuild.failure
            finally:
                relay.stop()
                admin_redis.close()
        finally:
            store.stop()
            kafka.stop()
    live_rate = args.records / applied_s
    rebuild_rate = args.records / back_s
    keys = len(newest)
    print(f"signals topic: {args.records} records, {args.symbols} symbols, {keys} symbol-kinds")
    print(f"live relay, applying every record:    {applied_s:7.2f} s  {live_rate:10,.0f} rec/s")
    print(
        f"rebuild after a Redis restart:        {back_s:7.2f} s  {rebuild_rate:10,.0f} rec/s"
        f"  ({rebuild_rate / live_rate:.1f}x the live rate; {rebuild.written} rows written)"
    )


if __name__ == "__main__":
    main()
