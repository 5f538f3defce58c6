"""bench.symbol_copies: copies of a recording are the same market under another name."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.symbol_copies import copy_name, renamed, write_copies
from quantcore.feed.recording import read_recording
from quantcore.localmode.source import default_recordings_dir, symbols_of

DEPTH = (
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT",'
    b'"U":5,"u":6,"b":[["1.0","2.0"]],"a":[]}}'
)


def test_copy_names() -> None:
    assert copy_name("BTCUSDT", 0) == "BTCUSDT"
    assert copy_name("BTCUSDT", 12) == "BTC12USDT"
    with pytest.raises(ValueError, match="only USDT"):
        copy_name("BTCEUR", 1)


def test_renamed_frame_changes_only_the_symbol() -> None:
    out = renamed(DEPTH, "BTCUSDT", "BTC3USDT")
    assert out == DEPTH.replace(b"btcusdt@", b"btc3usdt@").replace(b'"BTCUSDT"', b'"BTC3USDT"')
    assert renamed(DEPTH, "BTCUSDT", "BTCUSDT") is DEPTH


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
