"""Recordings copied under other symbol names: load the whole pipeline with more symbols than
were recorded (the repository's recordings hold two).

Copy k of BTCUSDT is BTC<k>USDT: every frame's stream names and "s" fields renamed. Each copy's
receive times are shifted by a fraction of the depth interval, so the copies' updates
interleave as independent markets' would instead of arriving in one burst per tick. Exchange
ids and event times are left as recorded: every copy is a consistent market of its own.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from quantcore.feed.recording import read_recording

QUOTE = "USDT"
DEPTH_INTERVAL_NS = 100_000_000  # the recordings' diff depth: @depth@100ms


def copy_name(symbol: str, k: int) -> str:
    """BTCUSDT, 3 -> BTC3USDT (copy 0 is the symbol itself)."""
    if k == 0:
        return symbol
    if not symbol.endswith(QUOTE):
        raise ValueError(f"{symbol}: only {QUOTE} symbols are copied")
    return f"{symbol[: -len(QUOTE)]}{k}{QUOTE}"


def renamed(frame: bytes, symbol: str, name: str) -> bytes:
    """`frame` with `symbol`'s stream names and "s" fields renamed to `name`."""
    if name == symbol:
        return frame
    lower, new_lower = symbol.lower().encode(), name.lower().encode()
    frame = frame.replace(b'"' + lower + b"@", b'"' + new_lower + b"@")
    return frame.replace(b'"s":"' + symbol.encode() + b'"', b'"s":"' + name.encode() + b'"')


def write_copies(sources: list[Path], dest: Path, copies: int) -> list[Path]:
    """`copies` copies of each recording in `sources` (the first keeps its symbol) written
    to `dest` as `<symbol>_<date>.gz`; returns the files written."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    total = copies * len(sources)
    for i, source in enumerate(sources):
        symbol, _, date = source.name.partition("_")
        for k in range(copies):
            name = copy_name(symbol.upper(), k)
            # Spread every copy of every recording evenly over one depth interval.
            shift_ns = (k * len(sources) + i) * DEPTH_INTERVAL_NS // total
            path = dest / f"{name.lower()}_{date}"
            with gzip.open(path, "wb", compresslevel=1) as out:
                for line in read_recording(source):
                    frame = renamed(line.frame, symbol.upper(), name)
                    out.write(b"%d %s\n" % (line.recv_ns + shift_ns, frame))
            written.append(path)
    return written
