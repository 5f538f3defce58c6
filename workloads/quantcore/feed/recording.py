"""Recordings (`<recv ns> <json>` per line, gzip) and what a shard would publish for one.

Format (see recordings/binance-spot/README.md): each line is a combined-stream frame, or a
bare REST depth response; a bare response belongs to the symbol of the nearest depth frame
before it, or, at the start of a file (an archived interval begins with its snapshot:
quantcore.feed.archive), of the first depth frame after it.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from quantcore.events import BookRecord, QuarantineRecord, TradeFlowRecord, TradeRecord
from quantcore.feed import binance
from quantcore.feed.book import SyncCounters
from quantcore.feed.flowpacing import MIN_GAP_NS
from quantcore.feed.normalizer import BOOK, FLOW, QUARANTINE, RAW, TRADES, Normalizer


@dataclass(frozen=True, slots=True)
class Line:
    recv_ns: int
    frame: bytes
    symbol: str | None  # the stream's symbol, or the symbol a bare snapshot belongs to
    is_snapshot: bool


def open_text(path: str | Path) -> Iterator[bytes]:
    p = Path(path)
    if p.suffix == ".gz":
        with gzip.open(p, "rb") as fh:
            yield from fh
    else:
        with p.open("rb") as fh:
            yield from fh


def read_recording(path: str | Path) -> Iterator[Line]:
    """Lines of one recording file, in file order, with their symbols attributed."""
    last_depth_symbol: str | None = None
    # From a snapshot before any depth frame on, lines wait: whose it is comes later.
    leading: list[Line] = []
    for raw in open_text(path):
        raw = raw.rstrip(b"\r\n")
        if not raw:
            continue
        ts, _, frame = raw.partition(b" ")
        recv_ns = int(ts)
        if binance.is_snapshot_body(frame):
            if last_depth_symbol is None:
                leading.append(Line(recv_ns, frame, None, True))
            else:
                yield Line(recv_ns, frame, last_depth_symbol, True)
            continue
        symbol: str | None = None
        # Cheap peek at the stream name: `{"stream":"btcusdt@depth@100ms",...`
        if frame.startswith(b'{"stream":"'):
            end = frame.find(b'"', 11)
            stream = frame[11:end].decode()
            symbol = binance.symbol_of_stream(stream)
            if "@depth" in stream:
                last_depth_symbol = symbol
                for line in leading:
                    owner = symbol if line.is_snapshot else line.symbol
                    yield Line(line.recv_ns, line.frame, owner, line.is_snapshot)
                leading.clear()
        line = Line(recv_ns, frame, symbol, False)
        if leading:
            leading.append(line)
        else:
            yield line
    yield from leading


def write_line(fh: object, recv_ns: int, frame: bytes) -> None:
    fh.write(b"%d %s\n" % (recv_ns, frame))  # type: ignore[attr-defined]


@dataclass
class Published:
    """What a shard publishes for a recording, as encoded bytes per record kind, in order."""

    records: list[tuple[str, str | None, bytes]] = field(default_factory=list)
    counters: dict[str, SyncCounters] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)

    def values(self, kind: str) -> list[bytes]:
        return [v for k, _, v in self.records if k == kind]


def publish_recording(
    *paths: str | Path,
    levels: int = 20,
    tick_sizes: dict[str, float] | None = None,
    flow_min_gap_ns: int = MIN_GAP_NS,
) -> Published:
    """Run recordings (merged by receive time) through the shard's normalizer, no I/O but files.

    The publish time of every record is its frame's receive time, and the receive times drive
    the exchange clock that emits trade-flow decay ticks (checked after every line), so the
    result is deterministic.
    """
    out = Published()
    clock_ns = [0]

    def emit(kind: str, symbol: str | None, value: bytes) -> None:
        out.records.append((kind, symbol, value))

    normalizer = Normalizer(
        binance,
        emit,
        levels=levels,
        tick_sizes=tick_sizes,
        clock=lambda: clock_ns[0],
        monotonic=lambda: clock_ns[0],
        flow_min_gap_ns=flow_min_gap_ns,
    )
    for line in merged(*paths):
        clock_ns[0] = line.recv_ns
        if line.symbol is not None:
            normalizer.add_symbol(line.symbol)
        if line.is_snapshot:
            if line.symbol is not None:
                normalizer.on_snapshot_body(line.frame, line.symbol, line.recv_ns)
        else:
            normalizer.on_frame(line.frame, line.recv_ns)
        normalizer.flow_ticks()
    normalizer.flush_flows()  # a shard releases them one pacing gap later
    out.counters = {s: normalizer.counters(s) for s in normalizer.symbols}
    out.quarantined = dict(normalizer.quarantined)
    return out


def merged(*paths: str | Path) -> Iterator[Line]:
    """Several recordings merged by receive time (each file keeps its own order)."""
    import heapq

    iters = [read_recording(p) for p in paths]
    if len(iters) == 1:
        return iters[0]
    return heapq.merge(*iters, key=lambda line: line.recv_ns)


def records_from_recording(
    *paths: str | Path, levels: int = 20, tick_sizes: dict[str, float] | None = None
) -> list[BookRecord | TradeRecord]:
    """The book and trade records a shard would publish for these recordings, in order,
    validated against the `quantcore.events` models (deterministic: publish time = receive time).
    """
    published = publish_recording(*paths, levels=levels, tick_sizes=tick_sizes)
    result: list[BookRecord | TradeRecord] = []
    for kind, _, value in published.records:
        if kind == BOOK:
            result.append(BookRecord.model_validate(orjson.loads(value)))
        elif kind == TRADES:
            result.append(TradeRecord.model_validate(orjson.loads(value)))
    return result


def flow_from_recording(*paths: str | Path) -> list[TradeFlowRecord]:
    """The trade-flow records a shard would publish for these recordings, in order."""
    published = publish_recording(*paths)
    return [TradeFlowRecord.model_validate(orjson.loads(v)) for v in published.values(FLOW)]


def quarantine_from_recording(*paths: str | Path) -> list[QuarantineRecord]:
    published = publish_recording(*paths)
    return [QuarantineRecord.model_validate(orjson.loads(v)) for v in published.values(QUARANTINE)]


__all__ = [
    "BOOK",
    "FLOW",
    "QUARANTINE",
    "RAW",
    "TRADES",
    "Line",
    "Published",
    "flow_from_recording",
    "merged",
    "publish_recording",
    "read_recording",
    "records_from_recording",
]
