"""Rebuilding Redis's serving state from the signals topic after Redis lost it.

Redis holds only the latest update per symbol and kind, and as deployed keeps no copy on disk:
a restarted Redis is empty, and a symbol whose value does not change again would stay empty
until it did. The relay notices (its marker key, quantcore.signalstore.relay_marker, is gone)
and starts a Rebuild: the records the relay had applied before, from the oldest offset Kafka
still holds up to the relay's own position on each partition, read on a consumer of their own
and written through the same compare-and-set. Only the newest row per symbol and kind is
written (`newest`), and a row the live relay has written meanwhile is newer still, so the
compare-and-set refuses what the rebuild would have moved backwards.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from quantcore.signalstore import SignalWriter, Update
from quantcore.stream import metrics

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

log = logging.getLogger(__name__)

BATCH = 5000  # records per consume() call while reading the log
WRITE_BATCH = 500  # winners per Redis round trip


def newest(
    updates: Iterable[Update], kept: dict[tuple[str, str], Update] | None = None
) -> dict[tuple[str, str], Update]:
    """Per (symbol, kind), the update with the highest sequence (the later one on a tie: the
    same row, delivered twice), merged into `kept` when given."""
    kept = {} if kept is None else kept
    for update in updates:
        key = (update.symbol, update.kind)
        held = kept.get(key)
        if held is None or update.sequence >= held.sequence:
            kept[key] = update
    return kept


def read_log(
    consumer: Consumer,
    topic: str,
    ends: Mapping[int, int],
    decode: Callable[[list[Message]], list[Update]],
    stopping: threading.Event,
) -> dict[tuple[str, str], Update]:
    """The newest update per symbol and kind among `topic`'s records below `ends` (partition ->
    end offset, exclusive), from the oldest offset each partition still holds."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    todo: dict[int, int] = {}
    for partition, end in ends.items():
        low, _ = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        if end > low:  # else retention already removed every record below the end
            todo[partition] = end
    kept: dict[tuple[str, str], Update] = {}
    if not todo:
        return kept
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
    while todo and not stopping.is_set():
        batch = consumer.consume(num_messages=BATCH, timeout=1.0)
        wanted = [
            m
            for m in batch
            if not m.error() and (m.offset() or 0) < todo.get(m.partition() or 0, -1)
        ]
        newest(decode(wanted), kept)
        # Done with a partition once the consumer's position reaches its end: offsets may
        # have gaps, so the position says it, not the last record's offset.
        for position in consumer.position([TopicPartition(topic, p) for p in todo]):
            if position.offset >= todo[position.partition]:
                del todo[position.partition]
    return kept


class Rebuild:
    """One rebuild on a daemon thread: `written` and `accepted` count the rows it wrote and
    the ones Redis took; `failure` holds what stopped it before the end."""

    def __init__(
        self,
        consumer_conf: dict[str, Any],
        topic: str,
        ends: Mapping[int, int],
        writer: SignalWriter,
        decode: Callable[[list[Message]], list[Update]],
    ) -> None:
        self.topic = topic
        self.ends = dict(ends)
        self.written = 0
        self.accepted = 0
        self.failure: BaseException | None = None
        self._conf = consumer_conf
        self._writer = writer
        self._decode = decode
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="state-rebuild", daemon=True)

    def start(self) -> Rebuild:
        self._thread.start()
        return self

    def done(self) -> bool:
        return not self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        from confluent_kafka import Consumer

        started = time.perf_counter()
        try:
            consumer = Consumer(self._conf)
            try:
                kept = read_log(consumer, self.topic, self.ends, self._decode, self._stop)
            finally:
                consumer.close()
            winners = list(kept.values())
            for start in range(0, len(winners), WRITE_BATCH):
                chunk = winners[start : start + WRITE_BATCH]
                self.accepted += sum(self._writer.write_many(chunk))
                self.written += len(chunk)
        except Exception as exc:  # the relay tries again at its next check
            self.failure = exc
            metrics.REBUILDS.labels("failed").inc()
            log.warning("rebuilding the serving state failed: %s", exc)
            return
        metrics.REBUILDS.labels("done").inc()
        metrics.REBUILT_ROWS.inc(self.written)
        log.info(
            "serving state rebuilt from %s up to offsets %s: %d rows written, %d accepted,"
            " in %.2fs",
            self.topic,
            self.ends,
            self.written,
            self.accepted,
            time.perf_counter() - started,
            extra={
                "event": "state_rebuilt",
                "topic": self.topic,
                "written": self.written,
                "accepted": self.accepted,
            },
        )
