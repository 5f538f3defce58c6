"""Make-before-break handover with real feed shards: two `quantcore feed` processes on the replay
server into real Kafka; a symbol moves between them by the routing files the operator's
handover step computes (its /live answers read by the operator's own client), then moves back
abruptly (both files at once, as before the handover existed). The longest silence of the
symbol's book records in Kafka is measured in each case and against steady state."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from quantcore.devservices.kafka import KafkaBroker
from quantcore.devservices.programs import ReplayProcess, ShardProcess, create_topics
from quantcore.events import Topics
from quantcore.operator import handover, shardlive
from quantcore.operator.planner import sample_feed, shard_table
from quantcore.routing import Route, RoutingTable
from tests.integration.test_feed_shard import PARTITIONS, acknowledged, consume, wait_for
from tests.unit.feed.reference import BTC, ETH

pytestmark = pytest.mark.integration

FEED = sample_feed()
MOVING = "BTCUSDT"


def table(btc_shard: int) -> RoutingTable:
    return RoutingTable.of(
        [Route(MOVING, btc_shard, 1), Route("ETHUSDT", 1, 2)], partitions=PARTITIONS, shards=2
    )


def write(path: Path, one_shard: RoutingTable) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(one_shard.to_json())
    tmp.replace(path)  # atomic, like the kubelet's symlink swap


def live(shards: list[ShardProcess]) -> dict[int, frozenset[str]]:
    """The operator's own /live client, pointed at each shard's loopback port."""
    out: dict[int, frozenset[str]] = {}
    for shard in shards:
        out |= shardlive.ask(FEED, port=shard.metrics_port, resolve=lambda _h, _p: ["127.0.0.1"])
    return out


def applied_count(shard: ShardProcess) -> int:
    return int(shard.health()["symbols"].get(MOVING, {}).get("applied", 0))


def grew(shard: ShardProcess, by: int) -> Callable[[], bool]:
    start = applied_count(shard)
    return lambda: applied_count(shard) >= start + by


def silences(records: list[tuple[int, dict[str, Any]]], start_ms: int, end_ms: int) -> list[int]:
    """Milliseconds between consecutive new book updates (first arrival of each seq) seen in
    Kafka within [start_ms, end_ms]: what a consumer of the symbol waits."""
    seen: set[int] = set()
    times = []
    for ts, record in sorted(records, key=lambda r: r[0]):
        if start_ms <= ts <= end_ms and record["seq"] not in seen:
            seen.add(record["seq"])
            times.append(ts)
    return [b - a for a, b in itertools.pairwise(times)]


def missing_updates(records: list[tuple[int, dict[str, Any]]], start_ms: int, end_ms: int) -> int:
    """Update ids skipped between consecutive distinct book records published in the window."""
    by_seq = {r["seq"]: r for ts, r in records if start_ms <= ts <= end_ms}
    ordered = [by_seq[s] for s in sorted(by_seq)]
    return sum(cur["first_seq"] - prev["seq"] - 1 for prev, cur in itertools.pairwise(ordered))


def test_a_symbol_handed_over_between_shards_never_stops_arriving(
    kafka_service: KafkaBroker, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    kafka_service.grant(Topics.with_prefix(prefix))
    names = create_topics(
        kafka_service.bootstrap, prefix, PARTITIONS, kafka_service.auth("operator")
    )
    feed = kafka_service.auth("feed")
    files = [tmp_path / "routing-0.json", tmp_path / "routing-1.json"]
    start = table(btc_shard=0)
    for i, path in enumerate(files):
        write(path, shard_table(start, i))
    marks: dict[str, float] = {}
    with (
        ReplayProcess([BTC, ETH], tmp_path, speed=1, loop=True) as replay,
        ShardProcess(
            routing=files[0], shard=0, kafka=kafka_service.bootstrap, ws_url=replay.ws_url,
            rest_url=replay.rest_url, workdir=tmp_path, topic_prefix=prefix, kafka_auth=feed,
        ) as a,
        ShardProcess(
            routing=files[1], shard=1, kafka=kafka_service.bootstrap, ws_url=replay.ws_url,
            rest_url=replay.rest_url, workdir=tmp_path, topic_prefix=prefix, kafka_auth=feed,
        ) as b,
    ):  # fmt: skip
        shards = [a, b]
        wait_for("both shards live", lambda: live(shards) == {0: {MOVING}, 1: {"ETHUSDT"}})
        marks["steady"] = time.time()
        wait_for("steady updates", grew(a, 60))

        # Make-before-break: the operator's steps, applied until the handover is done.
        final = table(btc_shard=1)
        applied = {i: shard_table(start, i) for i in range(2)}
        since: dict[tuple[str, int], datetime] = {}
        marks["handover"] = time.time()
        steps = []

        def advance() -> bool:
            nonlocal applied, since
            step = handover.step(final, applied, live(shards), since, datetime.now(UTC))
            for i, t in step.tables.items():
                if t != applied.get(i):
                    write(files[i], t)
            steps.append({i: t.symbols for i, t in step.tables.items()})
            applied, since = step.tables, {m.key: m.since for m in step.pending}
            return step.done

        wait_for("the handover", advance)
        assert steps[0] == {0: (MOVING,), 1: (MOVING, "ETHUSDT")}  # gain first, both hold
        assert steps[-1] == {0: (), 1: (MOVING, "ETHUSDT")}
        assert applied == {i: shard_table(final, i) for i in range(2)}
        wait_for("shard 0 let go", lambda: MOVING not in a.health()["symbols"])
        marks["handover_done"] = time.time()
        wait_for("updates from shard 1", grew(b, 30))

        # Abrupt: both files at once, the way reconcile applied every object before.
        back = table(btc_shard=0)
        marks["abrupt"] = time.time()
        for i, path in enumerate(files):
            write(path, shard_table(back, i))
        wait_for("shard 0 live again", lambda: MOVING in live(shards).get(0, set()))
        wait_for("shard 1 let go", lambda: MOVING not in b.health()["symbols"])
        marks["abrupt_done"] = time.time()
        wait_for("updates from shard 0", grew(a, 30))
        marks["end"] = time.time()

        replay.stop()
        wait_for("every record acknowledged", lambda: all(acknowledged(s) for s in shards))
        health = [s.health() for s in shards]

    assert all(h["delivery_failed"] == 0 for h in health)
    records = [
        (m.timestamp()[1], orjson.loads(m.value()))
        for m in consume(kafka_service, names["book"], idle=3)
        if m.key() == MOVING.encode()
    ]
    ms = {k: int(v * 1000) for k, v in marks.items()}
    steady = silences(records, ms["steady"], ms["handover"])
    during = silences(records, ms["handover"] - 1000, ms["handover_done"] + 2000)
    abrupt = silences(records, ms["abrupt"] - 1000, ms["abrupt_done"] + 2000)
    print(
        "longest silence of",
        MOVING,
        "book records in Kafka (ms): steady",
        max(steady),
        "| make-before-break",
        max(during),
        "| abrupt",
        max(abrupt),
        "| update ids skipped: make-before-break",
        missing_updates(records, ms["handover"] - 1000, ms["handover_done"] + 2000),
        "abrupt",
        missing_updates(records, ms["abrupt"] - 1000, ms["abrupt_done"] + 2000),
        "| handover steps",
        len(steps),
        f"{marks['handover_done'] - marks['handover']:.2f} s",
    )
    assert len(steady) > 50
    # Make-before-break: no update id is skipped, and no silence longer than steady state has
    # (plus 100 ms, one update interval, for two producers' scheduling on a busy machine).
    assert missing_updates(records, ms["handover"] - 1000, ms["handover_done"] + 2000) == 0
    assert max(during) <= max(steady) + 100
