"""The live view's model and text rendering: latest signals per symbol, as table rows.

Pure (no terminal, no network): `quantcore watch` feeds it updates and prints `render()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quantcore.v1 import signals_pb2

COLUMNS = (
    ("symbol", 10),
    ("mid", 12),
    ("spread", 9),
    ("bps", 6),
    ("obi1", 6),
    ("obi5", 6),
    ("obi10", 6),
    ("obi20", 6),
    ("ofi", 9),
    ("tfi1s", 6),
    ("tfi5s", 6),
    ("tfi30s", 6),
    ("book seq", 14),
    ("age", 7),
    ("lag ms", 7),
)


@dataclass
class SymbolRow:
    symbol: str
    book: signals_pb2.BookSignals | None = None
    trades: signals_pb2.TradeFlow | None = None
    book_seq: int = 0
    received_ns: int = 0  # when this client last received anything for the symbol
    pipeline_lag_ns: int | None = None  # feed receive -> this client, when the feed stamped it


@dataclass
class Board:
    rows: dict[str, SymbolRow] = field(default_factory=dict)

    def apply(self, update: signals_pb2.SignalUpdate, received_ns: int) -> None:
        row = self.rows.setdefault(update.symbol, SymbolRow(update.symbol))
        row.received_ns = received_ns
        if update.hops.feed_receive_ns:
            row.pipeline_lag_ns = received_ns - update.hops.feed_receive_ns
        kind = update.WhichOneof("body")
        if kind == "book":
            row.book = update.book
            row.book_seq = update.sequence
        elif kind == "trades":
            row.trades = update.trades

    def render(self, now_ns: int, status: str = "") -> list[str]:
        lines = [" ".join(name.rjust(width) for name, width in COLUMNS)]
        for symbol in sorted(self.rows):
            cells = _cells(self.rows[symbol], now_ns)
            lines.append(" ".join(c.rjust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True)))
        if status:
            lines.append(status)
        return lines


def _num(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def _cells(row: SymbolRow, now_ns: int) -> list[str]:
    b, t = row.book, row.trades
    age_s = (now_ns - row.received_ns) / 1e9
    lag = "-" if row.pipeline_lag_ns is None else f"{row.pipeline_lag_ns / 1e6:.0f}"
    book_cells = (
        [
            _num(b.mid, 4 if b.mid < 100 else 2),
            _num(b.spread, 4 if b.mid < 100 else 2),
            _num(b.spread_bps, 2),
            _num(b.obi_1, 2),
            _num(b.obi_5, 2),
            _num(b.obi_10, 2),
            _num(b.obi_20, 2),
            _num(b.ofi_l1, 3),
        ]
        if b is not None
        else ["-"] * 8
    )
    trade_cells = (
        [_num(t.tfi_1s, 2), _num(t.tfi_5s, 2), _num(t.tfi_30s, 2)] if t is not None else ["-"] * 3
    )
    return [
        row.symbol,
        *book_cells,
        *trade_cells,
        str(row.book_seq or "-"),
        f"{age_s:.1f}s",
        lag,
    ]
