"""The relay: signals-topic records -> Redis, on a thread of the `quantcore stream` driver.

The Spark queries write their rows through Spark's JVM Kafka sink (the one sink real-time
mode runs without handing rows to Python worker processes, whose pickler waits for
ever-growing batches); this consumer applies each row with one compare-and-set script call
(quantcore.signalstore) and commits a record's offset only after Redis has it. So delivery is
at least once, and a record replayed after a restart, duplicated by Spark's at-least-once
Kafka sink or arriving out of order changes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from quantcore.signalstore import SignalWriter, Update
from quantcore.stream import metrics
from quantcore.stream.update import Malformed, from_record

if TYPE_CHECKING:
    from confluent_kafka import Message

log = logging.getLogger(__name__)

# Records applied per Redis round trip at most (a burst after a restart drains in chunks).
BATCH = 500
POLL_S = 0.2  # how long a stop request may wait for the consumer to notice
RETRY_S = (0.1, 0.2, 0.5, 1.0, 2.0)  # waits between attempts while Redis is unreachable


@dataclass(frozen=True)
class RelayConfig:
    kafka: str
    redis_url: str
    topic: str

    @property
    def group(self) -> str:
        # One consumer group per signals topic: its committed offsets are the relay's progress.
        return f"quantcore-stream-relay.{self.topic}"


def consumer_conf(config: RelayConfig) -> dict[str, str | int | bool]:
    return {
        "bootstrap.servers": config.kafka,
        "group.id": config.group,
        # Static membership: one driver per group, so a restarted driver (even after SIGKILL)
        # takes its predecessor's partitions at once instead of waiting out its session.
        "group.instance.id": f"{config.group}.driver",
        # A new group starts at the beginning: replaying is harmless, skipping is not.
        "auto.offset.reset": "earliest",
        # Offsets are stored by hand after the Redis writes; librdkafka commits what is stored.
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": 1000,
        # Latency: the broker answers a fetch as soon as one byte is there; never wait long.
        "fetch.wait.max.ms": 10,
        "fetch.min.bytes": 1,
        "log_level": 4,
        # librdkafka's statistics carry the consumer lag per partition (metrics.record_stats).
        "statistics.interval.ms": metrics.STATS_INTERVAL_MS,
    }


def ensure_topic(config: RelayConfig, like: str) -> None:
    """Create the signals topic, with as many partitions as topic `like` (the book topic), if
    nobody has (the operator and `quantcore up` do): Kafka's auto-creation would give it its
    own defaults, and the relay cannot subscribe to a topic that does not exist yet."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": config.kafka, "log_level": 4})
    topics = admin.list_topics(timeout=30).topics
    if config.topic in topics:
        return
    source = topics.get(like)
    partitions = len(source.partitions) if source is not None and source.partitions else 1
    future = admin.create_topics([NewTopic(config.topic, partitions)])[config.topic]
    try:
        future.result(30)
        log.info("created %s with %d partition(s)", config.topic, partitions)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def decode(messages: Sequence[Message], now_ns: int) -> tuple[list[Update], list[Malformed]]:
    """The updates and the refused-input markers in `messages`; a record that is not a row
    of the job (which only a foreign producer could write) is counted as malformed itself."""
    updates: list[Update] = []
    malformed: list[Malformed] = []
    for msg in messages:
        _, created_ms = msg.timestamp()
        try:
            action = from_record(
                msg.value() or b"",
                # The signals record's timestamp: when the job handed the row to Kafka.
                stream_compute_ns=max(created_ms, 0) * 1_000_000,
                sink_write_ns=now_ns,
            )
        except ValueError as exc:
            log.warning(
                "unreadable record at %s/%s/%s skipped: %s",
                msg.topic(),
                msg.partition(),
                msg.offset(),
                exc,
            )
            malformed.append(Malformed(str(msg.topic()), msg.partition() or 0, msg.offset() or 0))
            continue
        if isinstance(action, Malformed):
            log.warning(
                "malformed record at %s/%s/%s skipped",
                action.topic,
                action.partition,
                action.offset,
            )
            malformed.append(action)
        else:
            updates.append(action)
    return updates, malformed


class Relay:
    """Consumes the signals topic on a daemon thread until stop(); `failure` holds what ended
    it otherwise. Redis outages are waited out (offsets stay uncommitted meanwhile)."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.failure: BaseException | None = None
        self.applied = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="signals-relay", daemon=True)

    def start(self) -> Relay:
        self._thread.start()
        return self

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        import redis
        from confluent_kafka import Consumer

        try:
            store = SignalWriter(redis.Redis.from_url(self.config.redis_url, socket_keepalive=True))
            consumer = Consumer({**consumer_conf(self.config), "stats_cb": metrics.record_stats})
            consumer.subscribe([self.config.topic])
            log.info("relaying %s to Redis (group %s)", self.config.topic, self.config.group)
            try:
                while not self._stop.is_set():
                    # Wait for one record, then take what else is already here: consume()
                    # alone would wait for a full batch or its whole timeout.
                    first = consumer.poll(POLL_S)
                    if first is None:
                        continue
                    batch = [first, *consumer.consume(num_messages=BATCH - 1, timeout=0)]
                    records = [m for m in batch if not self._is_error(m)]
                    if records:
                        metrics.ROWS_RECEIVED.inc(len(records))
                        _, newest_ms = records[-1].timestamp()
                        metrics.LAST_RECORD.set(max(newest_ms, 0) / 1000)
                    if records and self._apply(store, records):
                        for msg in records:
                            consumer.store_offsets(message=msg)
            finally:
                consumer.close()  # commits the stored offsets
        except Exception as exc:  # handed to the driver, which stops the job on it
            self.failure = exc
            log.exception("relay stopped")

    @staticmethod
    def _is_error(msg: Message) -> bool:
        error = msg.error()
        if error is None:
            return False
        if error.fatal():
            raise RuntimeError(f"Kafka consumer: {error}")
        log.warning("Kafka consumer: %s", error)
        return True

    def _apply(self, store: SignalWriter, records: list[Message]) -> bool:
        """Write `records` to Redis; False only when asked to stop before Redis answered."""
        import redis

        attempt = 0
        while True:
            # Stamped now, so a write retried after an outage shows when it really went out.
            updates, malformed = decode(records, time.time_ns())
            started = time.perf_counter()
            try:
                for bad in malformed:
                    store.record_malformed(bad.topic, bad.partition, bad.offset)
                accepted = store.write_many(updates)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                metrics.REDIS_RETRIES.inc()
                wait = RETRY_S[min(attempt, len(RETRY_S) - 1)]
                attempt += 1
                log.warning("Redis unreachable (%s); retrying in %.1fs", exc, wait)
                if self._stop.wait(wait):
                    return False
                continue
            metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
            applied = sum(accepted)
            metrics.ROWS.labels("applied").inc(applied)
            metrics.ROWS.labels("stale").inc(len(accepted) - applied)
            metrics.ROWS.labels("malformed").inc(len(malformed))
            self.applied += len(updates)
            return True
