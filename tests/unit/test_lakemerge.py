"""Merging a sink's small files (quantcore.lakemerge): which merges are due, what readers read
once they are made, and that a running sink's rows stay exactly once through any merges."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcore import lakemerge
from quantcore.lake import Partition

H = lakemerge.HOUR_MS
DAY_MS = 24 * H
DAY0_MS = 1_733_356_800_000  # 2024-12-05T00:00Z
DAY0, DAY1 = "2024-12-05", "2024-12-06"


def uri(day: str, symbol: str, n: int) -> str:
    return f"s3a://b/lake/sink/signals/date={day}/symbol={symbol}/part-{n}.parquet"


def test_an_open_day_merges_per_window_once_the_sink_is_past_it():
    files = {uri(DAY0, "A", n): DAY0_MS + n * 30_000 for n in range(240)}  # 2 h at 30 s
    horizon = lakemerge.horizon(files)
    assert horizon == DAY0_MS + 239 * 30_000 - lakemerge.CLOCK_MARGIN_MS
    jobs = lakemerge.plan(files, lakemerge.MergeTable(), horizon_ms=horizon)
    # The first hour only: the second is not over by the sink's clock.
    assert [(j.start_ms, j.end_ms, len(j.sources)) for j in jobs] == [(DAY0_MS, DAY0_MS + H, 120)]
    assert jobs[0].sources == tuple(uri(DAY0, "A", n) for n in range(120))
    # A window of one file is left alone.
    lone = {uri(DAY0, "A", 0): DAY0_MS, uri(DAY0, "A", 1): DAY0_MS + 2 * H}
    assert lakemerge.plan(lone, lakemerge.MergeTable(), horizon_ms=DAY0_MS + 5 * H) == []


def test_a_merged_window_is_read_from_its_merged_file():
    files = {uri(DAY0, "A", n): DAY0_MS + n * 30_000 for n in range(240)}
    table = lakemerge.MergeTable()
    jobs = lakemerge.plan(files, table, horizon_ms=lakemerge.horizon(files))
    merged, due = lakemerge.after(table, {jobs[0]: "s3a://b/m1.parquet"}, now_ms=0)
    assert due == []  # retired, kept for reads that chose them
    assert lakemerge.view(files, merged) == [*list(files)[120:], "s3a://b/m1.parquet"]
    # Nothing more is due until the sink passes the next window.
    assert lakemerge.plan(files, merged, horizon_ms=lakemerge.horizon(files)) == []
    # The retired sources are removed once no read can be using them.
    later, due = lakemerge.after(merged, {}, now_ms=lakemerge.KEEP_SOURCES_MS)
    assert due == list(files)[:120]
    assert later.retired == ()


def test_a_closed_day_becomes_one_file_and_again_when_stragglers_come():
    files = {uri(DAY0, "A", n): DAY0_MS + n * 600_000 for n in range(144)}  # the day, 10 min
    hours = lakemerge.plan(files, lakemerge.MergeTable(), horizon_ms=DAY0_MS + DAY_MS - 1)
    assert len(hours) == 23  # the day's last hour is not over yet
    table, _ = lakemerge.after(
        lakemerge.MergeTable(), {j: f"m{j.start_ms}" for j in hours}, now_ms=0
    )
    # A window after the day's end: the day is closed, its merges and the rest become one.
    files[uri(DAY1, "A", 0)] = DAY0_MS + DAY_MS + 2 * H
    (day,) = lakemerge.plan(files, table, horizon_ms=DAY0_MS + DAY_MS + 2 * H)
    assert day.partition == Partition(DAY0, "A")
    assert day.replaces == table.merges
    assert len(day.sources) == 23 + 6
    table, _ = lakemerge.after(table, {day: "mday"}, now_ms=0)
    assert lakemerge.view(files, table) == [uri(DAY1, "A", 0), "mday"]
    # A late row of the closed day (a replayed batch): merged into the day's file again.
    files[uri(DAY0, "A", 999)] = DAY0_MS + DAY_MS + 3 * H
    (again,) = lakemerge.plan(files, table, horizon_ms=DAY0_MS + DAY_MS + 5 * H)
    assert again.sources == ("mday", uri(DAY0, "A", 999))


def test_a_closed_sink_merges_every_partition_into_one_file():
    files = {uri(DAY1, s, n): DAY0_MS + DAY_MS + n for s in "AB" for n in range(3)}
    files[uri(DAY1, "C", 0)] = DAY0_MS  # one file: nothing to gain
    jobs = lakemerge.plan(files, lakemerge.MergeTable(), horizon_ms=None)
    assert [(j.partition.symbol, len(j.sources), j.end_ms) for j in jobs] == [
        ("A", 3, lakemerge.FOREVER_MS),
        ("B", 3, lakemerge.FOREVER_MS),
    ]


def test_files_outside_partitions_are_read_and_never_merged():
    files = {"s3a://b/stray.parquet": 1, "s3a://b/other.parquet": 2}
    assert lakemerge.plan(files, lakemerge.MergeTable(), horizon_ms=None) == []
    assert lakemerge.view(files, lakemerge.MergeTable()) == list(files)


def test_escaped_partition_names_merge_as_plain_ones():
    files = {f"file:///l/t/date%3D{DAY0}/symbol%3DA/{n}.parquet": n for n in range(2)}
    (job,) = lakemerge.plan(files, lakemerge.MergeTable(), horizon_ms=None)
    assert job.partition == Partition(DAY0, "A")


def test_the_merge_table_round_trips_and_its_newest_file_wins():
    merge = lakemerge.Merge(DAY0, "A", 0, H, "s3a://b/m.parquet")
    table = lakemerge.MergeTable((merge,), (lakemerge.Retired("s3a://b/x", 5),))
    assert lakemerge.from_json(lakemerge.to_json(table)) == table
    with pytest.raises(ValueError, match="not a merge table"):
        lakemerge.from_json('{"merges": 3}')
    names = ["0000000002.json", "0000000010.json", ".0000000011.json.tmp", "x.json"]
    assert lakemerge.newest_name(names) == "0000000010.json"
    assert lakemerge.next_name(names) == "0000000011.json"
    assert lakemerge.next_name([]) == "0000000000.json"


# A running sink, simulated: batches commit files one after another (each a row of its own),
# and compactions run between them with the horizon the log gives. Whatever the order, a
# reader's files hold every committed row exactly once.
@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3 * DAY_MS // 600_000),  # how far the batch is after the last (10 min)
            st.sampled_from([DAY0, DAY1]),
            st.sampled_from("AB"),
            st.booleans(),  # a compaction after this batch
        ),
        min_size=1,
        max_size=60,
    ),
    st.sampled_from([H, 10 * 60_000]),
)
def test_rows_are_read_exactly_once_through_any_merges(batches, window_ms):
    rows: dict[str, Counter[str]] = {}  # file -> its rows
    committed: dict[str, int] = {}
    table = lakemerge.MergeTable()
    clock = DAY0_MS
    for n, (gap, day, symbol, compact) in enumerate(batches):
        clock += gap * 60_000
        name = uri(day, symbol, n)
        committed[name] = clock
        rows[name] = Counter([name])
        if compact or n == len(batches) - 1:
            horizon = lakemerge.horizon(committed)
            jobs = lakemerge.plan(committed, table, horizon_ms=horizon, window_ms=window_ms)
            done = {}
            for i, job in enumerate(jobs):
                merged = f"merged-{n}-{i}"
                rows[merged] = sum((rows[s] for s in job.sources), Counter())
                done[job] = merged
            table, _ = lakemerge.after(table, done, now_ms=clock)
        read = sum((rows[f] for f in lakemerge.view(committed, table)), Counter())
        assert read == Counter(list(committed))
    # And a closed sink's final compaction leaves one file per partition.
    jobs = lakemerge.plan(committed, table, horizon_ms=None)
    done = {}
    for i, job in enumerate(jobs):
        rows[f"final-{i}"] = sum((rows[s] for s in job.sources), Counter())
        done[job] = f"final-{i}"
    table, _ = lakemerge.after(table, done, now_ms=clock)
    files = lakemerge.view(committed, table)
    assert sum((rows[f] for f in files), Counter()) == Counter(list(committed))
    assert len(files) == len({(d, s) for _, d, s, _ in batches})
