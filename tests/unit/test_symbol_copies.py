"""quantcore.feed.copies: copies of a recording are the same market under another name (the
replay server's --symbols and the benchmarks' bench.symbol_copies)."""

from __future__ import annotations

from pathlib import Path

import pytest

import bench.symbol_copies
from quantcore.feed import copies
from quantcore.feed.copies import copied_lines, copy_name, plan, renamed, write_copies
from quantcore.feed.recording import read_recording
from quantcore.localmode.source import default_recordings_dir, symbols_of

DEPTH = (
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT",'
    b'"U":5,"u":6,"b":[["1.0","2.0"]],"a":[]}}'
)
BTC = Path("btcusdt_20240808.gz")
ETH = Path("ethusdt_20240808.gz")


def test_bench_uses_the_feed_module() -> None:
    assert bench.symbol_copies.write_copies is copies.write_copies


def test_copy_names() -> None:
    assert copy_name("BTCUSDT", 0) == "BTCUSDT"
    assert copy_name("BTCUSDT", 12) == "BTC12USDT"
    with pytest.raises(ValueError, match="only USDT"):
        copy_name("BTCEUR", 1)


def test_renamed_frame_changes_only_the_symbol() -> None:
    out = renamed(DEPTH, "BTCUSDT", "BTC3USDT")
    assert out == DEPTH.replace(b"btcusdt@", b"btc3usdt@").replace(b'"BTCUSDT"', b'"BTC3USDT"')
    assert renamed(DEPTH, "BTCUSDT", "BTCUSDT") is DEPTH


def test_plan_takes_the_recordings_in_turn_and_spreads_the_shifts() -> None:
    planned = plan([BTC, ETH], 5)
    assert [c.name for c in planned] == ["BTCUSDT", "ETHUSDT", "BTC1USDT", "ETH1USDT", "BTC2USDT"]
    assert [c.source for c in planned] == [BTC, ETH, BTC, ETH, BTC]
    shifts = [c.shift_ns for c in planned]
    assert shifts == sorted(set(shifts))  # distinct, increasing
    assert shifts[0] == 0
    assert shifts[-1] < copies.DEPTH_INTERVAL_NS
    # Fewer symbols than recordings: the first ones, unrenamed.
    assert [c.name for c in plan([BTC, ETH], 1)] == ["BTCUSDT"]


@pytest.mark.parametrize(
    ("sources", "symbols", "error"),
    [
        ([], 2, "no recordings"),
        ([BTC], 0, "at least 1"),
        ([BTC, BTC], 2, "same symbol"),
        ([Path("btceur_20240808.gz")], 2, "only USDT"),
    ],
)
def test_plan_refuses_what_it_cannot_copy(sources: list[Path], symbols: int, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        plan(sources, symbols)


def test_copies_keep_every_line_shifted_in_time(tmp_path: Path) -> None:
    source = default_recordings_dir() / "ethusdt_20240808.gz"
    files = write_copies([source], tmp_path, 3)
    assert symbols_of(tuple(files)) == ["ETH1USDT", "ETH2USDT", "ETHUSDT"]
    original = list(read_recording(source))
    copy = list(read_recording(tmp_path / "eth2usdt_20240808.gz"))
    assert len(copy) == len(original)
    shifts = {c.recv_ns - o.recv_ns for c, o in zip(copy, original, strict=True)}
    assert len(shifts) == 1
    assert 0 < shifts.pop() < 100_000_000
    # Snapshots stay attributed to the copy, frames name it and never the original.
    assert {c.symbol for c in copy} == {"ETH2USDT"}
    assert not any(b"ETHUSDT" in c.frame or b"ethusdt@" in c.frame for c in copy)


def test_copied_lines_in_memory_equal_the_written_copies(tmp_path: Path) -> None:
    sources = sorted(default_recordings_dir().glob("*.gz"))
    in_memory = list(copied_lines(sources, 4))
    assert {line.symbol for line in in_memory} == {"BTCUSDT", "ETHUSDT", "BTC1USDT", "ETH1USDT"}
    times = [line.recv_ns for line in in_memory]
    assert times == sorted(times)  # merged by receive time
    written = write_copies(sources, tmp_path, 2)
    for path in written:
        name = path.name.partition("_")[0].upper()
        from_file = list(read_recording(path))
        assert [line for line in in_memory if line.symbol == name] == from_file
