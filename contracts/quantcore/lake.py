"""The lake's layout and the pure decisions about it, shared by its writer (the stream job's
file sinks, quantcore.stream.lakesink) and its readers (`quantcore history`, retention).

Layout, under a lake root (a local directory or an s3a:// URI):

    <root>/<sink>/<table>/_spark_metadata/<batch>[.compact]   the sink's log of committed files
    <root>/<sink>/<table>/date=YYYY-MM-DD/symbol=SYMBOL/part-*.parquet

A sink is what one stream job writes while it keeps one checkpoint (the job's `--lake` is
`<root>/<sink>`). Spark's file sink numbers its log by the query's batch ids, and skips a batch
its log already holds: a job with a fresh checkpoint writing into an old sink would silently
drop its first batches. So a new checkpoint gets a new sink (the job refuses a local sink
ahead of its checkpoint: sink_ahead_of_checkpoint), and readers read every sink.

Readers list only the files the log commits: a driver killed mid-batch leaves the files it had
written but never logged, and the restarted batch writes them again under new names, so a plain
directory listing would read those rows twice. Through the log, each row is read once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

# Table -> what it holds. `signals` are the book query's rows, `flow` the trade-flow query's
# (both exactly as written to the signals topic, valid rows only), `books` and `trades` the
# valid input records the queries read, `raw` the raw topic: the log of record, every exchange
# frame and snapshot a shard took in, with its receive time (quantcore.lakearchive turns it
# back into recordings).
TABLES: dict[str, str] = {
    "signals": "book signals (the book query's published rows)",
    "flow": "trade-flow signals (the trade-flow query's published rows)",
    "books": "top-N order books (the book topic's valid records)",
    "trades": "trades (the trades topic's valid records)",
    "raw": "exchange frames and snapshots as received (the raw topic, the recording format)",
}
RAW_TABLE = "raw"
# Each table's exchange sequence: what orders a symbol's rows of one kind.
SEQUENCE_COLUMN: dict[str, str] = {
    "signals": "sequence",
    "flow": "sequence",
    "books": "seq",
    "trades": "trade_id",
    # A symbol's raw lines, in the order its shard took them in (one partition per symbol).
    "raw": "offset",
}
# A file sink's log forgets a file this many days after the lake's retention removes it:
# readers list files through the logs, so a file must go before its log entry does.
LOG_MARGIN_DAYS = 2


def log_retention(retention_days: int) -> str:
    """The file sink's `retention` option (a Spark duration) for a lake that keeps
    `retention_days` days; "" (the log keeps every entry) when it keeps everything (0)."""
    return f"{retention_days + LOG_MARGIN_DAYS}d" if retention_days > 0 else ""


PARTITION_COLUMNS = ("date", "symbol")
METADATA_DIR = "_spark_metadata"
# Every table's time column, which also names the date partition: the exchange event time,
# except in `raw`, whose lines (snapshots among them) carry no parsed event time: there it is
# the receive time, the recording's own clock.
TIME_COLUMN = "event_time_ms"

_LOG_NAME = re.compile(r"^(\d+)(\.compact)?$")
_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def partition_date(event_time_ms: int) -> str:
    """The `date` partition of a row: the UTC day of its exchange event time."""
    return datetime.fromtimestamp(event_time_ms / 1000, UTC).date().isoformat()


def partition_path(day: str, symbol: str) -> str:
    """The relative directory of one partition, as Spark's partitionBy names it."""
    return f"date={day}/symbol={symbol}"


# --- the sink's log of committed files ----------------------------------------------------


def is_log_file(name: str) -> bool:
    """A batch file of the sink's log (`7`, `9.compact`): not a checksum (`.7.crc`) or a
    temporary file Spark writes before renaming it into place."""
    return _LOG_NAME.match(name) is not None


def sink_ahead_of_checkpoint(log_names: Iterable[str], offsets_names: Iterable[str]) -> bool:
    """True when a sink's log holds a batch its query's checkpoint never planned (offsets/N):
    that checkpoint is not the one the sink was written with, and the file sink would skip
    its batches up to the log's newest, dropping their rows. (A log one batch ahead of the
    commits is normal after a crash: the batch is replayed, and rightly skipped.)"""
    logged = [int(m.group(1)) for m in map(_LOG_NAME.match, log_names) if m]
    planned = [int(name) for name in offsets_names if name.isdigit()]
    return max(logged, default=-1) > max(planned, default=-1)


def committed_files(log: Mapping[str, str]) -> list[str]:
    """The files the file sink committed, from its log: `log` maps each file name in
    `_spark_metadata` to its text. The newest compact file holds every entry up to its batch
    (Spark compacts every 10 batches and may delete older batch files); the batch files after
    it add to it. Files of uncommitted batches are in no entry; names that are not batch files
    (Spark's temporary files) are ignored."""
    return list(committed_times(log))


def committed_times(log: Mapping[str, str]) -> dict[str, int]:
    """committed_files with each file's modification time (ms) as the log holds it."""
    batches: list[tuple[int, bool, str]] = []
    for name, text in log.items():
        match = _LOG_NAME.match(name)
        if match:
            batches.append((int(match.group(1)), bool(match.group(2)), text))
    compacts = [b for b in batches if b[1]]
    start = max((b[0] for b in compacts), default=-1)
    chosen = [b for b in batches if b[0] > start or (b[1] and b[0] == start)]
    files: dict[str, int] = {}
    for _, _, text in sorted(chosen):
        for entry in _entries(text):
            if entry.get("action") == "delete":
                files.pop(entry["path"], None)
            elif not entry.get("isDir"):
                files[entry["path"]] = int(entry.get("modificationTime", 0))
    return files


# Spark's default `spark.sql.streaming.fileSink.log.compactInterval`: a batch id whose
# successor is a multiple of it is a compaction ("9.compact").
LOG_COMPACT_INTERVAL = 10


def log_text(entries: Iterable[Mapping[str, Any]]) -> str:
    """A sink log file, as Spark writes one: the version line, then one JSON entry a line."""
    return "\n".join(["v1", *(json.dumps(dict(entry), separators=(",", ":")) for entry in entries)])


def add_entry(uri: str, size: int, modified_ms: int) -> dict[str, Any]:
    """A log entry committing one file (Spark's SinkFileStatus)."""
    return {
        "path": uri,
        "size": size,
        "isDir": False,
        "modificationTime": modified_ms,
        "blockReplication": 1,
        "blockSize": 33554432,
        "action": "add",
    }


def _entries(text: str) -> Iterable[dict[str, Any]]:
    lines = text.splitlines()
    if not lines or not lines[0].startswith("v"):
        raise ValueError(f"not a file sink log (first line {lines[:1]!r})")
    for line in lines[1:]:
        if line.strip():
            yield json.loads(line)


def local_path(uri: str) -> str:
    """A committed file's local path from the URI the log holds (`file:/x/y%3D1` -> /x/y=1);
    ValueError for a remote one."""
    parts = urlsplit(uri)
    if parts.scheme not in ("", "file"):
        raise ValueError(f"not a local file: {uri}")
    return unquote(parts.path)


@dataclass(frozen=True)
class Partition:
    day: str
    symbol: str


def partition_of(path: str) -> Partition | None:
    """The (date, symbol) partition a file's path names, or None when it names none."""
    day = symbol = None
    for segment in path.split("/"):
        if segment.startswith("date="):
            day = segment[len("date=") :]
        elif segment.startswith("symbol="):
            symbol = segment[len("symbol=") :]
    if day is None or symbol is None:
        return None
    return Partition(day, symbol)


def select_files(files: Iterable[str], symbol: str, first_day: str, last_day: str) -> list[str]:
    """The files of `symbol`'s partitions dated first_day..last_day (inclusive): a query reads
    only those."""
    chosen = []
    for path in files:
        partition = partition_of(path)
        if partition and partition.symbol == symbol and first_day <= partition.day <= last_day:
            chosen.append(path)
    return sorted(chosen)


# --- retention ----------------------------------------------------------------------------


DAY_MS = 86_400_000


def expired(modified_ms: int, now_ms: int, retention_days: int) -> bool:
    """Past retention: a file written `retention_days` days or more before `now_ms` (its age
    is write time, as an S3 lifecycle rule ages objects and Spark's log `retention` its
    entries, so a replayed old day is kept as long as a live one). 0 keeps everything."""
    if retention_days < 0:
        raise ValueError(f"retention must be 0 (keep all) or more days, got {retention_days}")
    return retention_days > 0 and now_ms - modified_ms >= retention_days * DAY_MS


def date_dir_day(name: str) -> str | None:
    """The day a `date=YYYY-MM-DD` directory name holds, or None for any other name."""
    match = _DATE_DIR.match(name)
    if not match:
        return None
    try:
        date.fromisoformat(match.group(1))
    except ValueError:
        return None
    return match.group(1)


# --- query bounds -------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """[start_ms, end_ms) of exchange event time."""

    start_ms: int
    end_ms: int

    @property
    def first_day(self) -> str:
        return partition_date(self.start_ms)

    @property
    def last_day(self) -> str:
        return partition_date(self.end_ms - 1)


def parse_time(text: str, *, end: bool) -> int:
    """Milliseconds since the epoch of a UTC date (`2026-12-05`) or time
    (`2026-12-05T10:30:00`, an offset allowed). A bare date as an end bound means the end of
    that day, so `--from D --to D` is the whole day D."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            if end:
                moment += timedelta(days=1)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(
            f"not a date or time: {text!r} (want YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS], UTC)"
        ) from None
    return int(moment.timestamp() * 1000)


def interval(start: str, end: str) -> Interval:
    """The query interval from `--from` and `--to`; ValueError when it is empty."""
    start_ms, end_ms = parse_time(start, end=False), parse_time(end, end=True)
    if end_ms <= start_ms:
        raise ValueError(f"--to ({end}) must be after --from ({start})")
    return Interval(start_ms, end_ms)
