"""Recordings copied under other symbol names: serve or load more symbols than were recorded
(the repository's recordings hold two).

Copy k of BTCUSDT is BTC<k>USDT: every frame's stream names and "s" fields renamed. Each copy's
receive times are shifted by a fraction of the depth interval, so the copies' updates
interleave as independent markets' would instead of arriving in one burst per tick. Exchange
ids and event times are left as recorded: every copy is a consistent market of its own.

`plan` is pure (which copy of which recording, under which name, shifted by how much);
`copied_lines` reads them in memory (the replay server's `--symbols`), `write_copies` writes
them as recording files (the benchmarks).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from quantcore.feed.recording import Line, read_recording

QUOTE = "USDT"
DEPTH_INTERVAL_NS = 100_000_000  # the recordings' diff depth: @depth@100ms


@dataclass(frozen=True)
class Copy:
    source: Path
    symbol: str  # the recorded symbol
    name: str  # the copy's symbol
    shift_ns: int  # added to every receive time


def copy_name(symbol: str, k: int) -> str:
    """BTCUSDT, 3 -> BTC3USDT (copy 0 is the symbol itself)."""
    if k == 0:
        return symbol
    if not symbol.endswith(QUOTE):
        raise ValueError(f"{symbol}: only {QUOTE} symbols are copied")
    return f"{symbol[: -len(QUOTE)]}{k}{QUOTE}"


def recorded_symbol(source: Path) -> str:
    """`btcusdt_20240808.gz` -> BTCUSDT (the recordings' file naming)."""
    symbol = source.name.partition("_")[0].upper()
    if not symbol:
        raise ValueError(f"{source}: a recording's name starts with its symbol (<symbol>_...)")
    return symbol


def plan(sources: Sequence[Path], symbols: int) -> list[Copy]:
    """`symbols` copies in all, taken round-robin from `sources` (copy 0 of each keeps its
    name), their shifts spread evenly over one depth interval."""
    if not sources:
        raise ValueError("no recordings to copy")
    if symbols < 1:
        raise ValueError(f"the number of symbols must be at least 1, got {symbols}")
    recorded = [recorded_symbol(s) for s in sources]
    if len(set(recorded)) != len(recorded):
        raise ValueError(f"two recordings of the same symbol: {', '.join(map(str, sources))}")
    copies = []
    for index in range(symbols):
        k, i = divmod(index, len(sources))
        name = copy_name(recorded[i], k)
        copies.append(Copy(sources[i], recorded[i], name, index * DEPTH_INTERVAL_NS // symbols))
    return copies


def renamed(frame: bytes, symbol: str, name: str) -> bytes:
    """`frame` with `symbol`'s stream names and "s" fields renamed to `name`."""
    if name == symbol:
        return frame
    lower, new_lower = symbol.lower().encode(), name.lower().encode()
    frame = frame.replace(b'"' + lower + b"@", b'"' + new_lower + b"@")
    return frame.replace(b'"s":"' + symbol.encode() + b'"', b'"s":"' + name.encode() + b'"')


def copy_lines(copy: Copy, lines: Iterable[Line] | None = None) -> Iterator[Line]:
    """One copy's lines, in file order (`lines`: the source's, if already read)."""
    for line in read_recording(copy.source) if lines is None else lines:
        yield Line(
            line.recv_ns + copy.shift_ns,
            renamed(line.frame, copy.symbol, copy.name),
            None if line.symbol is None else copy.name,
            line.is_snapshot,
        )


def copied_lines(sources: Sequence[Path], symbols: int) -> Iterator[Line]:
    """The lines of `symbols` copies of `sources`, merged by receive time."""
    import heapq

    copies = plan(sources, symbols)
    # Each recording is read (and decompressed) once, however many copies it makes.
    read = {source: list(read_recording(source)) for source in sources}
    return heapq.merge(
        *(copy_lines(c, read[c.source]) for c in copies), key=lambda line: line.recv_ns
    )


def write_copies(sources: list[Path], dest: Path, copies: int) -> list[Path]:
    """`copies` copies of each recording in `sources` (the first keeps its symbol) written
    to `dest` as `<symbol>_<date>.gz`; returns the files written."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for copy in sorted(plan(sources, copies * len(sources)), key=lambda c: sources.index(c.source)):
        date = copy.source.name.partition("_")[2]
        path = dest / f"{copy.name.lower()}_{date}"
        with gzip.open(path, "wb", compresslevel=1) as out:
            for line in copy_lines(copy):
                out.write(b"%d %s\n" % (line.recv_ns, line.frame))
        written.append(path)
    return written
