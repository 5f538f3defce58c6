"""The lake's `raw` table (the raw topic, archived by the stream job) turned back into
recordings, so the replay server serves any archived interval through the exchange's protocol.

An interval rarely starts at a snapshot: a shard asks for one when it (re)syncs, and keeps its
book with diffs for hours after. So each symbol's recording starts at its newest snapshot at or
before the interval's start, and holds every line from there to the end, led by the diffs the
shard had buffered while it waited for that snapshot (received before it, yet newer than it:
the book needs them). The lines before the start are the history the replay folds into its
true book without sending them (quantcore.feed.replay.Replay's `start_ns`): a client syncing
at the start gets the book as it was then, and from there the same diffs the shard took in, so
the same books and signals.

The raw table can hold a line twice (two sinks archived the same records, after a checkpoint
change): a line is its Kafka coordinates, read once. The shard's own reset markers (a
`{"quantcore": ...}` line) are no exchange frames, and are left out.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from quantcore import lake, lakestore
from quantcore.feed import binance
from quantcore.feed.messages import DepthDiff
from quantcore.feed.recording import write_line
from quantcore.lakequery import literal

if TYPE_CHECKING:
    import duckdb

NS_PER_MS = 1_000_000
OWN_MARKER = b'{"quantcore":'  # quantcore.feed.normalizer's reset marker, not exchange data
# How far before a snapshot to look for the diffs its shard buffered while waiting for it (a
# shard gives up on a snapshot request after seconds, and asks again).
BUFFERED_LOOKBACK_NS = 300 * 1_000_000_000


class NothingArchived(LookupError):
    """The lake's raw table holds no line for the interval."""


@dataclass(frozen=True)
class Exported:
    symbol: str
    path: Path
    lines: int  # written, history included
    history: int  # of them, before the interval's start (folded, not sent)


def bridged(lines: Sequence[tuple[int, bytes]], snapshot_ns: int) -> list[tuple[int, bytes]]:
    """A symbol's recording from its snapshot received at `snapshot_ns`, given its lines in
    receive order from some time before it: of the lines before the snapshot, only the diffs
    it does not cover (update ids past its `lastUpdateId`); from it on, every line. The shard's
    own markers are no exchange frames, and go."""
    at = next(
        (
            i
            for i, (recv, f) in enumerate(lines)
            if recv == snapshot_ns and binance.is_snapshot_body(f)
        ),
        None,
    )
    kept = [(recv, f) for recv, f in lines if not f.startswith(OWN_MARKER)]
    if at is None:
        return kept
    covered = orjson.loads(lines[at][1])["lastUpdateId"]
    before = []
    for recv, frame in lines[:at]:
        msg = binance.decode_frame(frame, recv) if b"@depth" in frame[:48] else None
        if isinstance(msg, DepthDiff) and msg.final_id > covered:
            before.append((recv, frame))
    return before + [(recv, f) for recv, f in lines[at:] if not f.startswith(OWN_MARKER)]


def _source(files: Sequence[str]) -> str:
    listed = ", ".join(literal(f) for f in files)
    return f"read_parquet([{listed}], hive_partitioning = true, union_by_name = true)"


def _newest_snapshots(
    db: duckdb.DuckDBPyConnection, files: Sequence[str], start_ns: int
) -> dict[str, int]:
    """symbol -> receive time of its newest snapshot at or before `start_ns`."""
    snapshot = literal(binance.SNAPSHOT_PREFIX.decode() + "%")
    rows = db.execute(
        f"SELECT symbol, max(recv_ns) FROM {_source(files)}"
        f" WHERE recv_ns <= {start_ns} AND frame LIKE {snapshot} GROUP BY symbol"
    ).fetchall()
    return {str(symbol): int(recv) for symbol, recv in rows}


def _lines(
    db: duckdb.DuckDBPyConnection, files: Sequence[str], symbol: str, first_ns: int, end_ns: int
) -> list[tuple[int, str]]:
    """The symbol's lines in [first_ns, end_ns), each once, in receive order (then Kafka's)."""
    return db.execute(
        f"SELECT recv_ns, frame FROM {_source(files)}"
        f" WHERE symbol = {literal(symbol)} AND recv_ns >= {first_ns} AND recv_ns < {end_ns}"
        ' QUALIFY row_number() OVER (PARTITION BY topic, "partition", "offset" ORDER BY recv_ns)'
        ' = 1 ORDER BY recv_ns, "partition", "offset"'
    ).fetchall()


def export(
    root: Path,
    span: lake.Interval,
    out_dir: Path,
    symbols: Sequence[str] = (),
    *,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> list[Exported]:
    """Write one recording per symbol (`<symbol>_<YYYYMMDD>.gz`, the recordings' naming) of
    the raw lines of `span` (receive time), each from its newest snapshot at or before the
    start. NothingArchived when no symbol has a line in the interval."""
    from quantcore.lakereader import connect

    db = connection or connect()
    committed = [str(p) for p in lakestore.committed_files(root, lake.RAW_TABLE)]
    by_symbol: dict[str, list[str]] = {}
    for path in committed:
        partition = lake.partition_of(path)
        if partition is None or partition.day > span.last_day:
            continue
        if not symbols or partition.symbol in symbols:
            by_symbol.setdefault(partition.symbol, []).append(path)
    start_ns, end_ns = span.start_ms * NS_PER_MS, span.end_ms * NS_PER_MS
    snapshots = (
        _newest_snapshots(db, [f for fs in by_symbol.values() for f in fs], start_ns)
        if by_symbol
        else {}
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    day = span.first_day.replace("-", "")
    exported = []
    for symbol, files in sorted(by_symbol.items()):
        snapshot_ns = snapshots.get(symbol)
        first_ns = start_ns if snapshot_ns is None else snapshot_ns - BUFFERED_LOOKBACK_NS
        first_day = lake.partition_date(first_ns // NS_PER_MS)
        chosen = lake.select_files(files, symbol, first_day, span.last_day)
        found = _lines(db, chosen, symbol, first_ns, end_ns) if chosen else []
        lines = [(recv, frame.encode()) for recv, frame in found]
        if snapshot_ns is not None:
            lines = bridged(lines, snapshot_ns)
        if not any(recv >= start_ns for recv, _ in lines):
            continue  # nothing of this symbol in the interval itself
        recording = out_dir / f"{symbol.lower()}_{day}.gz"
        with gzip.open(recording, "wb") as fh:
            for recv_ns, frame in lines:
                write_line(fh, recv_ns, frame)
        history = sum(recv < start_ns for recv, _ in lines)
        exported.append(Exported(symbol, recording, len(lines), history))
    if not exported:
        raise NothingArchived(
            f"the lake in {root} has no raw lines"
            f"{' of ' + ', '.join(symbols) if symbols else ''} in that interval"
        )
    return exported
