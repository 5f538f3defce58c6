"""A replay from a start time (an archived interval, quantcore.feed.archive): the lines before
the start only build the true book, so a depth request asked before anything is played gets
the book as of the start; every line from the start is sent, and none before it."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

from quantcore.feed import binance
from quantcore.feed.book import SyncState
from quantcore.feed.messages import DepthDiff
from quantcore.feed.recording import merged, read_recording
from quantcore.feed.replay import Replay
from quantcore.localmode.source import default_recordings_dir

RECORDINGS = sorted(default_recordings_dir().glob("*.gz"))


def _start(fraction: float) -> int:
    lines = list(merged(*RECORDINGS))
    return lines[int(len(lines) * fraction)].recv_ns


def test_the_true_book_is_the_book_as_of_the_start_before_anything_plays() -> None:
    start = _start(0.4)
    replay = Replay(RECORDINGS, start_ns=start, speed=0)
    for symbol in replay.symbols:
        last_before = max(
            msg.final_id
            for line in replay.lines
            if line.symbol == symbol and line.recv_ns < start and not line.is_snapshot
            for msg in [binance.decode_frame(line.frame, line.recv_ns)]
            if isinstance(msg, DepthDiff)
        )
        truth = replay._true_book(symbol)
        assert truth is not None
        assert truth.state is SyncState.LIVE
        assert truth.last_update_id == last_before


def test_only_the_lines_from_the_start_are_sent() -> None:
    start = _start(0.7)
    replay = Replay(RECORDINGS, start_ns=start, speed=0)
    sent: list[bytes] = []

    async def record(frame: bytes, stream: str) -> None:
        sent.append(frame)

    async def play() -> None:
        replay._send_stream = record  # type: ignore[method-assign]
        replay.wanted = frozenset(replay._streams)
        replay._depth_asked = set(replay.symbols)  # every client has asked for its book
        replay.started.set()
        await asyncio.wait_for(replay.play(), 60)

    asyncio.run(play())
    expected = [x.frame for x in replay.lines if x.recv_ns >= start and not x.is_snapshot]
    assert sent == expected
    assert sent
    assert len(sent) < len(replay.lines) // 2


def test_a_snapshot_opening_a_file_belongs_to_the_first_depth_stream_after_it(
    tmp_path: Path,
) -> None:
    source = list(read_recording(RECORDINGS[0]))
    snapshot = next(x for x in source if x.is_snapshot)
    later = [x for x in source if x.recv_ns > snapshot.recv_ns][:50]
    path = tmp_path / "btcusdt_20240808.gz"
    with gzip.open(path, "wb") as fh:
        for line in [snapshot, *later]:
            fh.write(b"%d %s\n" % (line.recv_ns, line.frame))
    lines = list(read_recording(path))
    assert lines[0].is_snapshot
    assert lines[0].symbol == snapshot.symbol == "BTCUSDT"
    assert [x.frame for x in lines] == [snapshot.frame, *(x.frame for x in later)]
