"""The relay: signals-topic records -> Redis, on a thread of the `quantcore stream` driver.

The Spark queries write their rows through Spark's JVM Kafka sink (the one sink real-time
mode runs without handing rows to Python worker processes, whose pickler waits for
ever-growing batches); this consumer applies each row with one compare-and-set script call
(quantcore.signalstore) and commits a record's offset only after Redis has it. So delivery is
at least once, and a record replayed after a restart, duplicated by Spark's at-least-once
Kafka sink or arriving out of order changes nothing.

Once a second the relay also asks whether Redis still holds its state (its marker key): a
restarted Redis has lost it, and the relay rebuilds it from the records it had applied
(quantcore.stream.rebuild) while it goes on applying new ones.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quantcore.kafkaacl import relay_group
from quantcore.kafkaauth import KafkaAuth
from quantcore.redisauth import RedisAuth, redacted
from quantcore.signalstore import SignalWriter, Update, relay_marker
from quantcore.stream import metrics
from quantcore.stream.rebuild import Rebuild
from quantcore.stream.update import Malformed, from_record

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message, TopicPartition

log = logging.getLogger(__name__)

# Records applied per Redis round trip at most (a burst after a restart drains in chunks).
BATCH = 500
POLL_S = 0.2  # how long a stop request may wait for the consumer to notice
RETRY_S = (0.1, 0.2, 0.5, 1.0, 2.0)  # waits between attempts while Redis is unreachable
STATE_CHECK_S = 1.0  # how often the relay asks whether Redis still holds its state


@dataclass(frozen=True)
class RelayConfig:
    kafka: str
    redis_url: str
    topic: str
    # The relay's own ACL user (quantcore.redisacl.RELAY) and Redis's CA.
    redis_auth: RedisAuth = field(default_factory=RedisAuth)
    # The stream job's Kafka user (quantcore.kafkaacl.STREAM) and the brokers' CA.
    kafka_auth: KafkaAuth = field(default_factory=KafkaAuth)

    @property
    def group(self) -> str:
        return relay_group(self.topic)


def consumer_conf(config: RelayConfig) -> dict[str, str | int | bool]:
    return {
        **config.kafka_auth.client_config(),
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


def rebuild_conf(config: RelayConfig) -> dict[str, str | int | bool]:
    """A rebuild's consumer: the relay's user and group (its ACLs allow no other), assigned
    partitions by hand, committing nothing and outside the group's membership."""
    conf = consumer_conf(config)
    for key in ("group.instance.id", "statistics.interval.ms", "fetch.wait.max.ms"):
        conf.pop(key)
    conf["enable.auto.commit"] = False
    return conf


def ensure_topic(config: RelayConfig, like: str) -> None:
    """Create the signals topic, with as many partitions as topic `like` (the book topic), if
    nobody has (the operator and `quantcore up` do): Kafka's auto-creation would give it its
    own defaults, and the relay cannot subscribe to a topic that does not exist yet."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    settings: dict[str, Any] = {
        **config.kafka_auth.client_config(),
        "bootstrap.servers": config.kafka,
        "log_level": 4,
    }
    settings["logger"] = log.getChild("librdkafka")  # through our handler, not onto stderr
    admin = AdminClient(settings)
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
        code = exc.args[0].code()
        if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            # The stream user may not create topics (quantcore.kafkaacl): say what is missing.
            raise RuntimeError(
                f"the signals topic {config.topic} does not exist and Kafka user"
                f" {config.kafka_auth.username} may not create it: the operator (or quantcore up)"
                " creates every topic of a feed"
            ) from exc
        if code != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def decode(
    messages: Sequence[Message], now_ns: int, report: bool = True
) -> tuple[list[Update], list[Malformed]]:
    """The updates and the refused-input markers in `messages`; a record that is not a row
    of the job (which only a foreign producer could write) is counted as malformed itself.
    `report`: log each one (a rebuild reads records whose faults were logged already)."""
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
            malformed.append(Malformed(str(msg.topic()), msg.partition() or 0, msg.offset() or 0))
            if not report:
                continue
            log.warning(
                "unreadable record at %s/%s/%s skipped: %s",
                msg.topic(),
                msg.partition(),
                msg.offset(),
                exc,
                extra={
                    "event": "unreadable",
                    "topic": msg.topic(),
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                },
            )
            continue
        if isinstance(action, Malformed):
            malformed.append(action)
            if not report:
                continue
            log.warning(
                "malformed record at %s/%s/%s skipped",
                action.topic,
                action.partition,
                action.offset,
                extra={
                    "event": "malformed",
                    "topic": action.topic,
                    "partition": action.partition,
                    "offset": action.offset,
                },
            )
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
        # The latest rebuild of Redis's state (quantcore.stream.rebuild), None before any.
        self.rebuild: Rebuild | None = None
        self._state_checks = True
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
        if self.rebuild is not None:
            self.rebuild.stop(timeout)

    def _run(self) -> None:
        import redis
        from confluent_kafka import Consumer

        try:
            client = redis.Redis.from_url(
                self.config.redis_url,
                socket_keepalive=True,
                **self.config.redis_auth.client_kwargs(),
            )
            store = SignalWriter(client)
            consumer = Consumer(
                {
                    **consumer_conf(self.config),
                    "stats_cb": metrics.record_stats,
                    # librdkafka's lines through our handler (served by poll), not onto stderr.
                    "logger": log.getChild("librdkafka"),
                }
            )
            consumer.subscribe([self.config.topic])
            redis_at = redacted(self.config.redis_url)  # a password in the URL is never logged
            redis_user = self.config.redis_auth.username or "default"
            log.info(
                "relaying %s (Kafka: %s, group %s) to Redis at %s as %s",
                self.config.topic,
                self.config.kafka_auth.describe(),
                self.config.group,
                redis_at,
                redis_user,
                extra={
                    "topic": self.config.topic,
                    "group": self.config.group,
                    "kafka_user": self.config.kafka_auth.username or "",
                    "redis": redis_at,
                    "redis_user": redis_user,
                },
            )
            next_check = 0.0
            try:
                while not self._stop.is_set():
                    if self._state_checks and time.monotonic() >= next_check:
                        next_check = time.monotonic() + STATE_CHECK_S
                        self._check_state(store, consumer)
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

    def _check_state(self, store: SignalWriter, consumer: Consumer) -> None:
        """Start a rebuild when Redis no longer holds the relay's state, or the last rebuild
        failed; nothing while one runs, while Redis is away, or before the group assigned
        this relay its partitions (it knows no position to rebuild up to yet)."""
        import redis

        running = self.rebuild
        if running is not None and not running.done():
            return
        failed = running is not None and running.failure is not None
        try:
            if not failed and store.holds_state_of(self.config.topic):
                return
            assignment = consumer.assignment()
            if not assignment:
                return
            ends = applied_ends(consumer, assignment)
            # Set before reading: a Redis that restarts again during the rebuild loses the
            # marker too, so the next check starts over on the new one.
            store.mark_state_of(self.config.topic, f"rebuilt up to {ends}")
        except (redis.ConnectionError, redis.TimeoutError):
            return
        except redis.ResponseError as exc:
            # A Redis whose ACL predates the marker (NOPERM): relaying goes on, rebuilds not.
            log.error(
                "cannot check Redis for the serving state (%s): no rebuild after a Redis"
                " restart until the relay's Redis user may use %s",
                exc,
                relay_marker(self.config.topic),
                extra={"event": "state_check_refused"},
            )
            self._state_checks = False
            return
        log.warning(
            "Redis holds no serving state of %s (restarted?): rebuilding it from the records"
            " applied before, up to offsets %s",
            self.config.topic,
            ends,
            extra={"event": "state_rebuild", "topic": self.config.topic},
        )
        self.rebuild = Rebuild(
            rebuild_conf(self.config),
            self.config.topic,
            ends,
            store,
            lambda messages: decode(messages, time.time_ns(), report=False)[0],
        ).start()

    @staticmethod
    def _is_error(msg: Message) -> bool:
        error = msg.error()
        if error is None:
            return False
        if error.fatal():
            raise RuntimeError(f"Kafka consumer: {error}")
        log.warning(
            "Kafka consumer: %s",
            error,
            extra={"topic": msg.topic(), "partition": msg.partition(), "error": error.name()},
        )
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
            except redis.AuthenticationError:
                raise  # wrong user or password: waiting will not fix it, fail the job
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                metrics.REDIS_RETRIES.inc()
                wait = RETRY_S[min(attempt, len(RETRY_S) - 1)]
                attempt += 1
                log.warning(
                    "Redis unreachable (%s); retrying in %.1fs",
                    exc,
                    wait,
                    extra={"event": "redis_unreachable", "attempt": attempt, "retry_in_s": wait},
                )
                if self._stop.wait(wait):
                    return False
                continue
            metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
            applied = sum(accepted)
            metrics.ROWS.labels("applied").inc(applied)
            metrics.ROWS.labels("stale").inc(len(accepted) - applied)
            metrics.ROWS.labels("malformed").inc(len(malformed))
            if applied < len(accepted) and log.isEnabledFor(logging.DEBUG):
                # Expected (a handover's overlap, a replayed batch): counted, told on request.
                for update, ok in zip(updates, accepted, strict=True):
                    if not ok:
                        log.debug(
                            "stale row refused by the compare-and-set",
                            extra={
                                "event": "stale",
                                "symbol": update.symbol,
                                "kind": update.kind,
                                "sequence": update.sequence,
                            },
                        )
            self.applied += len(updates)
            return True


def applied_ends(consumer: Consumer, assignment: list[TopicPartition]) -> dict[int, int]:
    """Per assigned partition, the offset below which the relay has applied every record (or
    is applying them now): its position, else (nothing fetched yet) its group's commit."""
    ends = {tp.partition: tp.offset for tp in consumer.position(assignment) if tp.offset >= 0}
    unknown = [tp for tp in assignment if tp.partition not in ends]
    if unknown:
        for tp in consumer.committed(unknown, timeout=10):
            if tp.offset >= 0:
                ends[tp.partition] = tp.offset
    return ends
