"""A real feed shard (`quantcore feed`) against the replay server (`quantcore replay`) into real
Kafka: recording facts, every book against an independent reconstruction, fault switches,
reassignment in place and quarantine of bad input."""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from quantcore.devservices.kafka import KafkaBroker
from quantcore.devservices.programs import ReplayProcess, ShardProcess, create_topics
from quantcore.events import BookRecord, QuarantineRecord, Topics, TradeFlowRecord, TradeRecord
from quantcore.feed.tradeflow import LONGEST_MS, WINDOWS_MS
from quantcore.routing import Route, RoutingTable
from tests.unit.feed.reference import BTC, ETH, reference_books

pytestmark = pytest.mark.integration

PARTITIONS = 4
ROUTES = {"BTCUSDT": 1, "ETHUSDT": 2}
# Fast watchdog so a stalled socket is noticed within about two seconds.
WATCHDOG = ["--idle-probe", "1", "--pong-timeout", "1"]


def write_routing(path: Path, symbols: dict[str, int], version: int) -> None:
    table = RoutingTable.of(
        [Route(s, 0, p) for s, p in symbols.items()],
        partitions=PARTITIONS,
        shards=1,
        version=version,
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(table.to_json())
    tmp.replace(path)  # atomic: the shard never reads half a file


@contextlib.contextmanager
def shard_on_replay(
    tmp_path: Path,
    kafka: KafkaBroker,
    prefix: str,
    recordings: list[Path],
    symbols: dict[str, int],
    *,
    speed: float,
    extra: Sequence[str] = (),
) -> Iterator[tuple[ReplayProcess, ShardProcess, Path]]:
    """A replay of `recordings` and one shard serving `symbols` (symbol -> partition) from it,
    with the shard's routing file (version 1), which a test may rewrite."""
    routing = tmp_path / "routing.json"
    write_routing(routing, symbols, 1)
    with (
        ReplayProcess(recordings, tmp_path, speed=speed) as replay,
        ShardProcess(
            routing=routing, shard=0, kafka=kafka.bootstrap, ws_url=replay.ws_url,
            rest_url=replay.rest_url, workdir=tmp_path, topic_prefix=prefix, extra=extra,
            kafka_auth=kafka.auth("feed"),  # the feed user alone, as in every deployment
        ) as shard,
    ):  # fmt: skip
        yield replay, shard, routing


def wait_for(what: str, check: Callable[[], bool], timeout: float = 240.0) -> float:
    """Poll until `check()`; returns the seconds it took (fails with `what` on timeout)."""
    start = time.monotonic()
    last_error: OSError | None = None
    while True:
        try:
            if check():
                return time.monotonic() - start
        except OSError as exc:  # a busy process may answer its status endpoint late
            last_error = exc
        else:
            last_error = None
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out waiting for {what} (last error: {last_error!r})")
        time.sleep(0.1)


def acknowledged(shard: ShardProcess) -> bool:
    health = shard.health()
    return bool(health["delivered"] == health["produced"])


def consume(
    kafka: KafkaBroker, topic: str, expect: int | None = None, idle: float = 5.0
) -> list[Any]:
    """Every message of `topic` from the beginning (until `expect` seen, or `idle` s of silence)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            **kafka.client_config("admin"),
            "group.id": f"t-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        out: list[Any] = []
        last = time.monotonic()
        while time.monotonic() - last < idle and (expect is None or len(out) < expect):
            for msg in consumer.consume(10_000, 0.5):
                if msg.error():
                    raise AssertionError(msg.error())
                out.append(msg)
                last = time.monotonic()
        return out
    finally:
        consumer.close()


class FlowFollower:
    """Reads a flow topic as it grows (for waiting on a condition over its records)."""

    def __init__(self, kafka: KafkaBroker, topic: str) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self._consumer = Consumer({**kafka.client_config("admin"), "group.id": f"t-{uuid.uuid4()}"})
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        self.records: list[TradeFlowRecord] = []

    def decayed(self, symbols: set[str]) -> bool:
        for msg in self._consumer.consume(10_000, 0.2):
            assert not msg.error(), msg.error()
            self.records.append(TradeFlowRecord.model_validate_json(msg.value() or b""))
        last = {r.symbol: r for r in self.records}
        return set(last) == symbols and all(
            r.tick and r.buy_volume_30s == r.sell_volume_30s == 0.0 for r in last.values()
        )


def assert_flow_is_exact(flows: list[TradeFlowRecord], trades: list[TradeRecord]) -> None:
    """Every flow record equals its windows recomputed from the trades topic, by brute force:
    the trades up to its last trade id with trade time in (as_of - W, as_of]."""
    by_symbol: dict[str, list[TradeRecord]] = defaultdict(list)
    for t in trades:
        by_symbol[t.symbol].append(t)
    last_trade_ms = {s: max(t.trade_time_ms for t in ts) for s, ts in by_symbol.items()}
    for flow in flows:
        seen = [t for t in by_symbol[flow.symbol] if t.trade_id <= flow.last_trade_id]
        for w in WINDOWS_MS:
            inside = [t for t in seen if flow.as_of_ms - w < t.trade_time_ms <= flow.as_of_ms]
            units = 10**8
            buy = sum(round(t.qty * units) for t in inside if not t.buyer_is_maker) / units
            sell = sum(round(t.qty * units) for t in inside if t.buyer_is_maker) / units
            suffix = f"{w // 1000}s"
            got = (getattr(flow, f"buy_volume_{suffix}"), getattr(flow, f"sell_volume_{suffix}"))
            assert got == (buy, sell), (flow, w)
    for symbol in by_symbol:
        mine = [f for f in flows if f.symbol == symbol]
        assert [f.sequence for f in mine] == sorted({f.sequence for f in mine})
        assert mine[-1].as_of_ms >= last_trade_ms[symbol] + LONGEST_MS


def books_by_symbol(messages: list[Any]) -> dict[str, list[dict[str, Any]]]:
    books: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for msg in messages:
        record = orjson.loads(msg.value())
        assert msg.key().decode() == record["symbol"]
        assert msg.partition() == ROUTES[record["symbol"]]
        books[record["symbol"]].append(record)
    return books


def assert_books_match_reference(
    books: list[dict[str, Any]], reference: dict[int, tuple[list, list]]
) -> None:
    """Every emitted book is the true book at its sequence number, uncrossed and sorted."""
    for book in books:
        want_bids, want_asks = reference[book["seq"]]
        assert list(zip(book["bid_px"], book["bid_qty"], strict=True)) == want_bids, book["seq"]
        assert list(zip(book["ask_px"], book["ask_qty"], strict=True)) == want_asks, book["seq"]
        assert book["bid_px"][0] < book["ask_px"][0]


@pytest.fixture(scope="module")
def references() -> dict[str, dict[int, tuple[list, list]]]:
    return {"BTCUSDT": reference_books(BTC), "ETHUSDT": reference_books(ETH)}


@pytest.fixture
def topics(kafka_service: KafkaBroker) -> tuple[str, dict[str, str]]:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    kafka_service.grant(Topics.with_prefix(prefix))  # the feed's users' ACLs, then its topics
    names = create_topics(
        kafka_service.bootstrap, prefix, PARTITIONS, kafka_service.auth("operator")
    )
    return prefix, names


def test_recordings_through_the_shard_into_kafka(
    kafka_service: KafkaBroker, topics: tuple[str, dict[str, str]], tmp_path: Path, references: dict
) -> None:
    prefix, names = topics
    with shard_on_replay(tmp_path, kafka_service, prefix, [BTC, ETH], ROUTES, speed=20) as (
        replay,
        shard,
        _routing,
    ):
        wait_for("the replay to finish", lambda: replay.status()["finished"])

        def synced() -> bool:
            symbols = shard.health()["symbols"]
            return symbols["BTCUSDT"]["applied"] >= 3449 and symbols["ETHUSDT"]["applied"] >= 3432

        wait_for("both books to apply every diff", synced)
        # No trade after the recording's end: the windows still roll off, by decay ticks on the
        # exchange clock, down to a last record of zeros for each symbol.
        flow_topic = FlowFollower(kafka_service, names["flow"])
        wait_for("trade flow to decay to zero", lambda: flow_topic.decayed(set(ROUTES)), 120)
        wait_for("every record acknowledged", lambda: acknowledged(shard))
        health = shard.health()
        metrics = shard.metrics()
    btc, eth = health["symbols"]["BTCUSDT"], health["symbols"]["ETHUSDT"]
    assert (btc["applied"], btc["dropped"], btc["gaps"]) == (3449, 2, 0)
    assert (eth["applied"], eth["dropped"], eth["gaps"]) == (3432, 2, 0)
    assert btc["crossed"] == eth["crossed"] == 0
    assert health["quarantined"] == {}
    assert health["delivery_failed"] == 0
    assert 'quantcore_feed_book_applied_total{symbol="BTCUSDT"} 3449.0' in metrics

    books = books_by_symbol(consume(kafka_service, names["book"], expect=3449 + 3432))
    assert len(books["BTCUSDT"]) == 3449
    assert len(books["ETHUSDT"]) == 3432
    for symbol, records in books.items():
        assert [b["seq"] for b in records] == list(references[symbol])
        assert_books_match_reference(records, references[symbol])
        BookRecord.model_validate(records[-1])
    trades = consume(kafka_service, names["trades"], expect=9757 + 6106)
    assert len(trades) == 9757 + 6106
    TradeRecord.model_validate_json(trades[0].value())
    # The raw topic is the log of record: every frame and the snapshots, per symbol partition.
    raw = consume(kafka_service, names["raw"], expect=41249 + 33618)
    assert len(raw) == 41249 + 33618
    with gzip.open(BTC, "rb") as fh:
        recorded = {line.split(b" ", 1)[1].rstrip(b"\n") for line in fh}
    shipped = {m.value().split(b" ", 1)[1] for m in raw if m.key() == b"BTCUSDT"}
    assert shipped == recorded
    flows = [TradeFlowRecord.model_validate_json(m.value()) for m in consume(
        kafka_service, names["flow"], expect=len(flow_topic.records)
    )]  # fmt: skip
    assert_flow_is_exact(flows, [TradeRecord.model_validate_json(m.value()) for m in trades])
    assert health["produced"] == len(raw) + len(trades) + 3449 + 3432 + len(flows)


FAULTS = ["gap", "duplicate", "reorder", "malformed", "disconnect", "stall", "shutdown", "throttle"]


def test_fault_switches_resync_without_invalid_books_or_loss(
    kafka_service: KafkaBroker, topics: tuple[str, dict[str, str]], tmp_path: Path, references: dict
) -> None:
    prefix, names = topics
    timings: dict[str, float] = {}
    with shard_on_replay(
        tmp_path, kafka_service, prefix, [BTC, ETH], ROUTES, speed=1, extra=WATCHDOG
    ) as (replay, shard, _routing):

        def btc() -> dict[str, Any]:
            return dict(shard.health()["symbols"]["BTCUSDT"])

        def conn() -> dict[str, Any]:
            return dict(shard.health()["connections"][0])

        def grew(read: Callable[[], dict[str, Any]], key: str, than: int) -> Callable[[], bool]:
            return lambda: int(read()[key]) > than

        def resynced(before: dict[str, Any]) -> Callable[[], bool]:
            def check() -> bool:
                now = btc()
                return bool(
                    now["resyncs"] > before["resyncs"]
                    and now["state"] == "live"
                    and now["applied"] > before["applied"]
                )

            return check

        wait_for("BTCUSDT live", grew(btc, "applied", 5))
        for kind in FAULTS:
            before, conn_before = btc(), conn()
            if kind == "throttle":
                # The next two snapshot requests are refused with 429 + Retry-After; a gap needs one.
                replay.fault("throttle", count=2)
                replay.fault("gap", symbol="BTCUSDT")
            else:
                replay.fault(kind, symbol="BTCUSDT", seconds=3)
            if kind in ("duplicate", "shutdown"):
                # Neither loses an update: the duplicate is dropped, the handover is seamless.
                if kind == "duplicate":
                    wait_for("duplicate dropped", grew(btc, "dropped", before["dropped"]))
                else:
                    wait_for("handover", grew(conn, "handovers", conn_before["handovers"]))
                    wait_for(
                        "updates after the handover", grew(btc, "applied", before["applied"] + 20)
                    )
                after = btc()
                assert after["gaps"] == before["gaps"]
                assert after["resyncs"] == before["resyncs"]
                continue
            # Everything else must lose the book and get it back.
            timings[kind] = wait_for(f"{kind}: resync", resynced(before))
        replay.stop()  # no more frames: the counts read below are final
        wait_for("every record acknowledged", lambda: acknowledged(shard))
        health = shard.health()
        time.sleep(1)
        assert shard.health()["produced"] == health["produced"]  # nothing more is coming
    print("resync seconds after each fault:", {k: round(v, 2) for k, v in timings.items()})
    assert health["delivery_failed"] == 0
    assert health["quarantined"].get("invalid json", 0) >= 1  # the malformed frame
    assert health["connections"][0]["handovers"] >= 1
    assert health["connections"][0]["connects"] >= 3  # disconnect and stall reconnected

    # No invalid book was emitted: every book is the true book at its sequence number.
    book_msgs = consume(kafka_service, names["book"])
    books = books_by_symbol(book_msgs)
    assert_books_match_reference(books["BTCUSDT"], references["BTCUSDT"])
    assert_books_match_reference(books["ETHUSDT"], references["ETHUSDT"])
    # Sequences only move forward; after each resync the first record has no previous top.
    seqs = [b["seq"] for b in books["BTCUSDT"]]
    assert seqs == sorted(set(seqs))
    resyncs = health["symbols"]["BTCUSDT"]["resyncs"]
    assert resyncs >= len(timings)
    assert sum(b["prev_bid_px"] is None for b in books["BTCUSDT"]) == 1 + resyncs
    # Nothing acknowledged was lost: the topics hold exactly what the shard produced.
    total = sum(
        len(consume(kafka_service, names[k], idle=3)) for k in ("raw", "trades", "quarantine")
    )
    assert total + len(book_msgs) == health["produced"] == health["delivered"]
    resets = [
        json.loads(m.value().split(b" ", 1)[1])
        for m in consume(kafka_service, names["raw"], idle=3)
        if b'"quantcore":"reset"' in m.value()
    ]
    assert {r["reason"] for r in resets} >= {"gap", "reconnect"}


def test_reassignment_in_place_without_restart_or_gap(
    kafka_service: KafkaBroker, topics: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    prefix, names = topics
    with shard_on_replay(tmp_path, kafka_service, prefix, [BTC, ETH], {"BTCUSDT": 1}, speed=2) as (
        replay,
        shard,
        routing,
    ):
        pid = shard.pid

        def symbols() -> dict[str, Any]:
            return dict(shard.health()["symbols"])

        wait_for("BTCUSDT live", lambda: symbols().get("BTCUSDT", {}).get("applied", 0) > 20)
        write_routing(routing, ROUTES, 2)  # add ETHUSDT
        wait_for("ETHUSDT live", lambda: symbols().get("ETHUSDT", {}).get("applied", 0) > 20)
        assert "ethusdt@depth@100ms" in replay.status()["subscriptions"]
        write_routing(routing, {"ETHUSDT": 2}, 3)  # remove BTCUSDT
        wait_for("BTCUSDT dropped", lambda: "BTCUSDT" not in symbols())
        wait_for(
            "BTCUSDT unsubscribed",
            lambda: "btcusdt@depth@100ms" not in replay.status()["subscriptions"],
        )
        eth_then = symbols()["ETHUSDT"]["applied"]
        wait_for("ETHUSDT still flowing", lambda: symbols()["ETHUSDT"]["applied"] > eth_then + 20)
        health = shard.health()
        assert shard.pid == pid
        assert shard.alive()
        # The replay closes a socket that sends more than 5 control messages a second.
        assert replay.status()["rate_violations"] == 0
    conn = health["connections"][0]
    assert conn["connects"] == 1  # one socket the whole time: resubscribed in place
    assert conn["control_sent"] >= 2  # SUBSCRIBE + UNSUBSCRIBE
    assert health["symbols"]["ETHUSDT"]["gaps"] == 0
    assert health["symbols"]["ETHUSDT"]["resyncs"] == 0
    books = books_by_symbol(consume(kafka_service, names["book"]))
    # The symbols that stayed never skipped an update id across the routing changes.
    for symbol in ("BTCUSDT", "ETHUSDT"):
        records = books[symbol]
        assert len(records) > 20
        for prev, cur in itertools.pairwise(records):
            assert cur["first_seq"] == prev["seq"] + 1, symbol


def bad_recording(path: Path) -> list[str]:
    """A synthetic BTCUSDT recording: a snapshot, good diffs, and bad frames between them that
    carry no update the book needs (so the shard must refuse them and keep serving)."""
    t = 1_700_000_000_000_000_000
    lines: list[bytes] = []

    def diff(first: int, last: int, bids: list, asks: list, **extra: Any) -> bytes:
        data = {
            "e": "depthUpdate",
            "E": 1,
            "s": "BTCUSDT",
            "U": first,
            "u": last,
            "b": bids,
            "a": asks,
            **extra,
        }
        return orjson.dumps({"stream": "btcusdt@depth@100ms", "data": data})

    def add(frame: bytes) -> None:
        nonlocal t
        t += 20_000_000
        lines.append(b"%d %s" % (t, frame))

    add(diff(100, 100, [["99.00", "1.0"]], []))
    add(b'{"lastUpdateId":100,"bids":[["99.00","1.0"],["98.00","2.0"]],"asks":[["101.00","1.0"]]}')
    seq = 101
    bad = [
        (b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":1,"b":[[NaN,"1"]],"a":[]}}', "invalid json"),
        (diff(1, 1, [["1e400", "1"]], []), "bids"),
        (diff(1, 1, [], [["101.00", "-3"]]), "asks"),
        (diff(1, 1, [], [], x="unknown"), "unknown field(s) ['x']"),
        (orjson.dumps({"stream": "btcusdt@depth@100ms", "data": {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 1}}), "missing field(s) ['a', 'b', 'u']"),
        (diff(1, 1, [["1.0", "1.0"]] * 80_000, []), "oversized frame"),
    ]  # fmt: skip
    for i in range(60):
        add(diff(seq, seq, [["99.00", f"{1 + i}.0"]], [["101.00", "1.0"]]))
        seq += 1
        if i % 8 == 4 and bad:
            add(bad.pop(0)[0])
    with gzip.open(path, "wb") as fh:
        fh.write(b"\n".join(lines) + b"\n")
    return [
        "invalid json",
        "bids",
        "asks",
        "unknown field(s) ['x']",
        "missing field(s) ['a', 'b', 'u']",
        "oversized frame",
    ]


def test_bad_input_is_quarantined_and_the_shard_keeps_serving(
    kafka_service: KafkaBroker, topics: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    prefix, names = topics
    recording = tmp_path / "bad.gz"
    reasons = bad_recording(recording)
    with shard_on_replay(tmp_path, kafka_service, prefix, [recording], {"BTCUSDT": 1}, speed=1) as (
        replay,
        shard,
        _routing,
    ):
        wait_for("the replay to finish", lambda: replay.status()["finished"])
        wait_for(
            "every good diff applied", lambda: shard.health()["symbols"]["BTCUSDT"]["applied"] >= 60
        )
        wait_for("every record acknowledged", lambda: acknowledged(shard))
        health = shard.health()
        metrics = shard.metrics()
        assert shard.alive()
    btc = health["symbols"]["BTCUSDT"]
    assert (btc["applied"], btc["gaps"], btc["resyncs"]) == (60, 0, 0)
    assert sum(health["quarantined"].values()) == len(reasons)
    assert 'quantcore_feed_quarantined_total{reason="oversized frame"} 1.0' in metrics
    quarantined = sorted(
        (
            QuarantineRecord.model_validate_json(m.value())
            for m in consume(kafka_service, names["quarantine"], expect=len(reasons))
        ),
        key=lambda r: r.recv_time_ns,
    )
    assert len(quarantined) == len(reasons)
    for record, reason in zip(quarantined, reasons, strict=True):
        assert record.reason.startswith(reason)
        assert record.frame
    books = [orjson.loads(m.value()) for m in consume(kafka_service, names["book"], expect=60)]
    assert [b["bid_qty"][0] for b in books] == [float(1 + i) for i in range(60)]


def json_log(path: Path) -> list[dict[str, Any]]:
    """Every line of a process's log as JSON (fails on a line that is not one object)."""
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"{path.name}:{number} is not JSON: {line!r}")
        assert isinstance(entry, dict), line
        entries.append(entry)
    return entries


def events(path: Path, event: str, **fields: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in json_log(path)
        if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
    ]


def test_the_shard_logs_json_lines_with_its_context(
    kafka_service: KafkaBroker,
    topics: tuple[str, dict[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What the operator's planner sets in a shard's pod (quantcore.logs), inherited by the
    # processes started here; the replay logs JSON too.
    monkeypatch.setenv("QUANTCORE_LOG_FORMAT", "json")
    monkeypatch.setenv("QUANTCORE_MARKETFEED", "prices")
    monkeypatch.setenv("QUANTCORE_NAMESPACE", "markets")
    monkeypatch.setenv("QUANTCORE_POD", "prices-feed-0-abcde")
    prefix, _names = topics
    with shard_on_replay(
        tmp_path, kafka_service, prefix, [BTC, ETH], ROUTES, speed=1, extra=WATCHDOG
    ) as (replay, shard, _routing):
        log = shard.log
        for symbol in ROUTES:

            def synced_once(symbol: str = symbol) -> bool:
                return bool(events(log, "book_synced", symbol=symbol))

            wait_for(f"{symbol} synced", synced_once)
        synced = len(events(log, "book_synced", symbol="BTCUSDT"))
        replay.fault("gap", symbol="BTCUSDT")
        wait_for(
            "the gap's resync",
            lambda: (
                bool(events(log, "book_reset", symbol="BTCUSDT", reason="gap"))
                and len(events(log, "book_synced", symbol="BTCUSDT")) > synced
            ),
        )
        replay.fault("disconnect", symbol="BTCUSDT", seconds=1)
        wait_for("the reconnect", lambda: bool(events(log, "reconnect")))
        wait_for(
            "both books reset by the reconnect",
            lambda: (
                {e["symbol"] for e in events(log, "book_reset", reason="reconnect")} == set(ROUTES)
            ),
        )
    # Stopped: every line it ever wrote, shutdown included, is one JSON object with context.
    entries = json_log(log)
    assert entries
    for entry in entries:
        assert {"ts", "level", "logger", "msg"} <= set(entry), entry
        assert entry["component"] == "feed", entry
        assert entry["shard"] == 0, entry
        assert entry["marketfeed"] == "prices", entry
        assert entry["namespace"] == "markets", entry
        assert entry["pod"] == "prices-feed-0-abcde", entry
    (routing,) = [e for e in entries if e.get("event") == "routing"]
    assert (routing["routing_version"], routing["added"]) == (1, sorted(ROUTES))
    (gap,) = events(log, "book_reset", reason="gap")
    assert (gap["level"], gap["symbol"], gap["logger"]) == (
        "WARNING",
        "BTCUSDT",
        "quantcore.feed.normalizer",
    )
    reconnect = events(log, "reconnect")[0]
    assert reconnect["connection"] == "shard0-conn0"
    assert reconnect["streams"] >= len(ROUTES)
    synced_entry = events(log, "book_synced", symbol="ETHUSDT")[0]
    assert isinstance(synced_entry["update_id"], int)
    # The replay server logs the same way; its one stdout line (the URLs) is not a log record.
    replay_lines = replay.log.read_text().splitlines()
    replay_entries = [json.loads(line) for line in replay_lines if not line.startswith("replay ")]
    assert replay_entries
    assert {e["component"] for e in replay_entries} == {"replay"}
