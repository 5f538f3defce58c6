"""Merging a sink's small files, also while its job still writes it: the pure decisions
(quantcore.lakecompaction reads, merges, writes and removes the files).

The stream job's file sink writes a Parquet file per partition (date, symbol) per batch:
2,880 a day at its 30 s interval. Its log (quantcore.lake.committed_files) names them, and a
running sink rewrites that log from its own view every 10 batches, so nothing else may write
into it. Merges are kept beside it instead, in a table of their own:

    <sink>/<table>/_quantcore_merges/<n>.json     the newest (highest n) is the whole table

Each merge says: every file the log commits for this partition whose modification time
falls in [start_ms, end_ms) is replaced, for readers, by one merged file holding all their
rows. Readers (quantcore.lakestore, quantcore.lakemirror) read `view`: the committed files
no merge covers, then the merged files. A merge table appears by one rename (or one S3 PUT),
so a reader sees a partition's rows either in the small files or in the merged one.

Why windows of modification time: the log keeps each file's time, and it is the only
order the sink gives. Why it is safe while the job writes: micro-batches run one after
another, and a batch writes its files after the one before it committed. So once the log
commits a file modified at T, every file modified before T (less a second for clocks) is in
a committed batch, and a window ending before that `horizon` can gain no file later.

Two kinds of merge, so no row is rewritten many times: while a partition's day is open, its
files merge per window (an hour: 120 files into one); once the sink's clock is a window past
the day's end, the day's merges and stragglers merge into one file, again when late rows
arrive. A closed sink (no job writes it: `quantcore up`'s earlier runs) has no horizon: every
partition becomes one file at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from urllib.parse import unquote

from quantcore.lake import Partition, partition_of

MERGES_DIR = "_quantcore_merges"
HOUR_MS = 3_600_000
# One clock stamps a sink's files (the machine's, or the object store's, which keeps whole
# seconds and runs on many hosts): a window closes this long after the newest commit passes it.
CLOCK_MARGIN_MS = 1_000
# Beyond every time a file can have: the end of a closed sink's merges.
FOREVER_MS = 1 << 62
# A merge's sources stay this long after the merge table stops naming them, so a read that
# chose them just before still finds them.
KEEP_SOURCES_MS = 600_000


@dataclass(frozen=True)
class Merge:
    """The committed files of `day`/`symbol` modified in [start_ms, end_ms), merged into
    `file`."""

    day: str
    symbol: str
    start_ms: int
    end_ms: int
    file: str

    @property
    def partition(self) -> Partition:
        return Partition(self.day, self.symbol)

    def covers(self, partition: Partition, modified_ms: int) -> bool:
        return partition == self.partition and self.start_ms <= modified_ms < self.end_ms


@dataclass(frozen=True)
class Retired:
    """A file no reader is given any more, removed once `since_ms` is KEEP_SOURCES_MS ago."""

    uri: str
    since_ms: int


@dataclass(frozen=True)
class MergeTable:
    merges: tuple[Merge, ...] = ()
    retired: tuple[Retired, ...] = ()


@dataclass(frozen=True)
class Job:
    """One merge to make: the rows of `sources` (in that order) into one file, which becomes
    `Merge(partition, start_ms, end_ms)` in place of the merges in `replaces`."""

    partition: Partition
    start_ms: int
    end_ms: int
    sources: tuple[str, ...]
    replaces: tuple[Merge, ...] = field(default=())


def _partition(uri: str) -> Partition | None:
    return partition_of(unquote(uri))  # a URI may encode the '=' of the names


def view(committed: Mapping[str, int], table: MergeTable) -> list[str]:
    """The files a reader reads: the committed ones (each with the modification time the log
    holds: quantcore.lake.committed_times) no merge covers, in the log's order, then the
    merged files."""
    by_partition: dict[Partition, list[Merge]] = {}
    for merge in table.merges:
        by_partition.setdefault(merge.partition, []).append(merge)
    kept = []
    for uri, modified_ms in committed.items():
        partition = _partition(uri)
        merges = by_partition.get(partition, []) if partition else []
        if partition is None or not any(m.covers(partition, modified_ms) for m in merges):
            kept.append(uri)
    return kept + [m.file for m in table.merges]


def horizon(committed: Mapping[str, int], margin_ms: int = CLOCK_MARGIN_MS) -> int:
    """The time before which a running sink's files are all committed: its newest commit's
    modification time, less the clocks' margin (nothing is known of an empty sink)."""
    newest = max(committed.values(), default=None)
    return 0 if newest is None else newest - margin_ms


def _day_end_ms(day: str) -> int:
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC)
    return int((start + timedelta(days=1)).timestamp() * 1000)


def plan(
    committed: Mapping[str, int],
    table: MergeTable,
    *,
    horizon_ms: int | None,
    window_ms: int = HOUR_MS,
) -> list[Job]:
    """The merges worth making now. `horizon_ms` is `horizon(committed)` for a running sink,
    None for a closed one. Only files modified before the last window boundary at or before
    the horizon are merged; a partition whose day ended a window before it becomes one file,
    an open day's files one per window (a window of a single file is left alone)."""
    if window_ms <= 0:
        raise ValueError(f"a merge window is longer than zero, not {window_ms} ms")
    cut = FOREVER_MS if horizon_ms is None else (horizon_ms // window_ms) * window_ms
    merges: dict[Partition, list[Merge]] = {}
    for merge in table.merges:
        merges.setdefault(merge.partition, []).append(merge)
    uncovered: dict[Partition, list[tuple[str, int]]] = {}
    for uri, modified_ms in committed.items():
        partition = _partition(uri)
        if partition is None or modified_ms >= cut:
            continue
        if not any(m.covers(partition, modified_ms) for m in merges.get(partition, [])):
            uncovered.setdefault(partition, []).append((uri, modified_ms))
    jobs = []
    for partition in sorted({*uncovered, *merges}, key=lambda p: (p.day, p.symbol)):
        files, done = uncovered.get(partition, []), merges.get(partition, [])
        if horizon_ms is None or _day_end_ms(partition.day) + window_ms <= cut:
            # A closed day: everything of it in one file (again when stragglers came).
            sources = (*(m.file for m in sorted(done, key=lambda m: m.start_ms)), *_uris(files))
            if len(sources) > 1:
                # Never narrower than what it replaces: a file those covered stays covered.
                end = max([cut, *(m.end_ms for m in done)])
                jobs.append(Job(partition, 0, end, sources, tuple(done)))
            continue
        windows: dict[int, list[tuple[str, int]]] = {}
        for item in files:
            windows.setdefault(item[1] // window_ms, []).append(item)
        for index, members in sorted(windows.items()):
            if len(members) > 1:
                start = index * window_ms
                jobs.append(Job(partition, start, start + window_ms, _uris(members)))
    return jobs


def _uris(items: Iterable[tuple[str, int]]) -> tuple[str, ...]:
    return tuple(uri for uri, _ in items)


def after(
    table: MergeTable, done: Mapping[Job, str], now_ms: int, keep_ms: int = KEEP_SOURCES_MS
) -> tuple[MergeTable, list[str]]:
    """The merge table once `done` (job -> merged file) is made, and the retired files due
    for removal now. A job's sources are retired, not removed: a read may have chosen them
    (`keep_ms`: how long they stay; 0 where no read runs)."""
    replaced = {merge for job in done for merge in job.replaces}
    merges = [m for m in table.merges if m not in replaced]
    merges += [
        Merge(job.partition.day, job.partition.symbol, job.start_ms, job.end_ms, file)
        for job, file in done.items()
    ]
    retired = list(table.retired)
    known = {r.uri for r in retired}
    for job in done:
        retired += [Retired(uri, now_ms) for uri in job.sources if uri not in known]
    due = [r.uri for r in retired if now_ms - r.since_ms >= keep_ms]
    kept = tuple(r for r in retired if now_ms - r.since_ms < keep_ms)
    order = sorted(merges, key=lambda m: (m.day, m.symbol, m.start_ms))
    return MergeTable(tuple(order), kept), due


# --- the merge table's files --------------------------------------------------------------


def table_name(number: int) -> str:
    return f"{number:010d}.json"


def table_names(names: Iterable[str]) -> list[str]:
    """The merge table's file names among `names` (not temporary files), oldest first."""
    return sorted(n for n in names if n.endswith(".json") and n[: -len(".json")].isdigit())


def newest_name(names: Iterable[str]) -> str | None:
    """The newest merge table's file name among `names` (None when there is none)."""
    tables = table_names(names)
    return tables[-1] if tables else None


def next_name(names: Iterable[str]) -> str:
    newest = newest_name(names)
    return table_name(0 if newest is None else int(newest[: -len(".json")]) + 1)


def to_json(table: MergeTable) -> str:
    return json.dumps(
        {
            "merges": [asdict(m) for m in table.merges],
            "retired": [asdict(r) for r in table.retired],
        },
        separators=(",", ":"),
    )


def from_json(text: str) -> MergeTable:
    """A merge table from its file; ValueError for a file that is not one."""
    try:
        data = json.loads(text)
        return MergeTable(
            tuple(Merge(**m) for m in data["merges"]),
            tuple(Retired(**r) for r in data["retired"]),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"not a merge table: {error}") from None
