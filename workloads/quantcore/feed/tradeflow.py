"""Trade flow in the shard: per-symbol buy and sell volume over trailing windows of exchange time.

Pure (no I/O, no clock of its own): the shard hands in trades and the exchange time it has
reached, and gets back the records to publish. Keeping this state here, as the shard keeps the
book, leaves the stream job a stateless projection that runs on the real-time path.

Definitions (the property tests hold the code to a brute-force twin of them):
- The value "as of" A of window W counts every accepted trade with trade time in (A - W, A];
  the aggressor bought unless `buyer_is_maker`. Accepted: a trade id above every id accepted
  before (the exchange numbers a symbol's trades in order; a repeat or an older id is the
  overlap of a connection handover).
- A trade's record is as of max(previous as_of, trade time): a trade that arrives after a decay
  tick passed its time still counts, in the windows that still hold it.
- Decay ticks sit on a TICK_MS grid of exchange time: at grid point g there is a record as of g
  iff some trade left some window in (previous as_of, g] (a trade leaves window W at t + W). So
  after the last trade there are at most LONGEST_MS / TICK_MS + 1 ticks, the last one (on the
  grid point at or after its exit from the longest window) all zeros, then nothing.
- sequence = last accepted trade id * TICKS_PER_TRADE + ticks since that trade: strictly
  increasing per symbol, and the same for two shards that saw the same trades and ticks.
- Quantities are counted in integer units of 1e-8 (the exchange's 8 decimals), so running sums
  never drift and an emptied window is exactly zero.
- Warm-up: windows are exact only once the symbol's streams have been followed for
  LONGEST_MS. `covered_since` is the first exchange time seen for the symbol after it was
  (re)subscribed; records as of an earlier time + LONGEST_MS are held back (None).
- Announcement: when the windows become exact at W = covered_since + LONGEST_MS and no record
  as of W or later has gone out since the (re)start, a record as of W does (a tick), so what a
  client holds is replaced by exact values at W even if no trade comes: after a reconnect,
  the value from before it does not stay for ever. Only once a trade id is known (a sequence
  below zero is not a valid record) and while the ticks since that trade stay below
  TICKS_PER_TRADE.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

WINDOWS_MS = (1_000, 5_000, 30_000)
LONGEST_MS = max(WINDOWS_MS)
TICK_MS = 100
# Ticks after one trade stay below LONGEST_MS / TICK_MS + 1 = 301 < 1024.
TICKS_PER_TRADE = 1024
QTY_UNITS = 10**8


@dataclass(frozen=True, slots=True)
class Flow:
    """One trade-flow value of one symbol, as of `as_of_ms` (exchange time)."""

    symbol: str
    sequence: int
    as_of_ms: int
    last_trade_id: int
    buy: tuple[float, ...]  # per window of WINDOWS_MS
    sell: tuple[float, ...]
    tick: bool  # a decay tick (no new trade)


class _Window:
    """The trades of one trailing window, oldest first, with their running sums in units."""

    __slots__ = ("buy", "sell", "span", "trades")

    def __init__(self, span: int) -> None:
        self.span = span
        self.trades: deque[tuple[int, int, int]] = deque()  # (time, buy units, sell units)
        self.buy = 0
        self.sell = 0

    def add(self, time_ms: int, buy: int, sell: int, as_of: int) -> None:
        if time_ms <= as_of - self.span:
            return  # already outside this window
        trades = self.trades
        if not trades or trades[-1][0] <= time_ms:
            trades.append((time_ms, buy, sell))
        else:  # older than the newest held (rare): keep the deque sorted by time
            i = len(trades)
            while i > 0 and trades[i - 1][0] > time_ms:
                i -= 1
            trades.insert(i, (time_ms, buy, sell))
        self.buy += buy
        self.sell += sell

    def roll(self, as_of: int) -> None:
        trades, edge = self.trades, as_of - self.span
        while trades and trades[0][0] <= edge:
            _, buy, sell = trades.popleft()
            self.buy -= buy
            self.sell -= sell

    def next_exit(self) -> int | None:
        """When the oldest trade held leaves the window (None: empty)."""
        return self.trades[0][0] + self.span if self.trades else None


class SymbolFlow:
    """One symbol's windows; `covered_since` None until the symbol's first event is seen."""

    __slots__ = (
        "announce",
        "as_of",
        "covered_since",
        "last_trade_id",
        "symbol",
        "ticks",
        "windows",
    )

    def __init__(self, symbol: str, last_trade_id: int = -1, ticks: int = 0) -> None:
        self.symbol = symbol
        self.windows = tuple(_Window(w) for w in WINDOWS_MS)
        self.as_of: int | None = None
        self.last_trade_id = last_trade_id
        self.ticks = ticks  # kept across a restart: sequences go on growing
        self.covered_since: int | None = None
        self.announce = True  # nothing warm has gone out since the (re)start

    def warm(self, as_of: int) -> bool:
        return self.covered_since is not None and as_of >= self.covered_since + LONGEST_MS

    def announcement_due(self) -> int | None:
        """When the announcement goes out (module docstring); None: none to make."""
        if (
            not self.announce
            or self.covered_since is None
            or self.last_trade_id < 0
            or self.ticks + 1 >= TICKS_PER_TRADE
        ):
            return None
        return max(self.covered_since + LONGEST_MS, self.as_of or 0)

    def on_trade(
        self, trade_id: int, time_ms: int, qty: float, buyer_is_maker: bool
    ) -> Flow | None:
        """The record after this trade, or None for a duplicate."""
        if trade_id <= self.last_trade_id:
            return None
        if self.covered_since is None:
            self.covered_since = time_ms
        as_of = time_ms if self.as_of is None else max(self.as_of, time_ms)
        units = round(qty * QTY_UNITS)
        buy, sell = (0, units) if buyer_is_maker else (units, 0)
        for window in self.windows:
            window.add(time_ms, buy, sell, as_of)
            window.roll(as_of)
        self.as_of = as_of
        self.last_trade_id = trade_id
        self.ticks = 0
        return self._flow(tick=False)

    def next_tick(self) -> int | None:
        """The grid point of the next decay tick (None: every window is empty)."""
        exits = [e for w in self.windows if (e := w.next_exit()) is not None]
        if not exits:
            return None
        return -(-min(exits) // TICK_MS) * TICK_MS

    def tick(self, grid_ms: int) -> Flow:
        for window in self.windows:
            window.roll(grid_ms)
        self.as_of = grid_ms
        self.ticks += 1
        return self._flow(tick=True)

    def _flow(self, tick: bool) -> Flow:
        assert self.as_of is not None
        return Flow(
            self.symbol,
            self.last_trade_id * TICKS_PER_TRADE + self.ticks,
            self.as_of,
            self.last_trade_id,
            tuple(w.buy / QTY_UNITS for w in self.windows),
            tuple(w.sell / QTY_UNITS for w in self.windows),
            tick,
        )


class TradeFlows:
    """Every symbol a shard serves; what it returns is what may be published (warm only)."""

    def __init__(self) -> None:
        self.symbols: dict[str, SymbolFlow] = {}
        self.next_due: int | None = None  # earliest pending tick of any symbol (a hint)

    def add(self, symbol: str) -> None:
        if symbol not in self.symbols:
            self.symbols[symbol] = SymbolFlow(symbol)

    def remove(self, symbol: str) -> None:
        self.symbols.pop(symbol, None)

    def restart(self, symbol: str) -> None:
        """The symbol's streams were interrupted (trades may be missing): windows start over,
        warming up again; ids already accepted stay refused, so sequences keep growing."""
        flow = self.symbols.get(symbol)
        if flow is not None:
            self.symbols[symbol] = SymbolFlow(symbol, flow.last_trade_id, flow.ticks)

    def seen(self, symbol: str, event_ms: int) -> None:
        """An event of the symbol at exchange time `event_ms` (any stream): starts coverage."""
        flow = self.symbols.get(symbol)
        if flow is not None and flow.covered_since is None:
            flow.covered_since = event_ms
            self._hint(flow)

    def warm(self, symbol: str, now_ms: int) -> bool:
        flow = self.symbols.get(symbol)
        return flow is not None and flow.warm(now_ms)

    def on_trade(
        self, symbol: str, trade_id: int, time_ms: int, qty: float, buyer_is_maker: bool
    ) -> Flow | None:
        flow = self.symbols.get(symbol)
        if flow is None:
            return None
        record = flow.on_trade(trade_id, time_ms, qty, buyer_is_maker)
        if record is None:
            return None
        warm = flow.warm(record.as_of_ms)
        if warm:
            flow.announce = False  # this record is it
        self._hint(flow)
        return record if warm else None

    def due(self, now_ms: int) -> list[Flow]:
        """The decay ticks and announcements due by exchange time `now_ms`, in order per
        symbol (warm only)."""
        out: list[Flow] = []
        next_due: int | None = None
        for flow in self.symbols.values():
            # (An announcement is due only once warm, so it always goes out and is made once.)
            while (g := _next_of(flow)) is not None and g <= now_ms:
                record = flow.tick(g)
                if flow.warm(g):
                    out.append(record)
                    flow.announce = False
            if g is not None and (next_due is None or g < next_due):
                next_due = g
        self.next_due = next_due
        return out

    def _hint(self, flow: SymbolFlow) -> None:
        due = _next_of(flow)
        if due is not None and (self.next_due is None or due < self.next_due):
            self.next_due = due


def _next_of(flow: SymbolFlow) -> int | None:
    """The symbol's next record by the clock alone: a decay tick or its announcement."""
    tick, announcement = flow.next_tick(), flow.announcement_due()
    if announcement is None:
        return tick
    return announcement if tick is None else min(tick, announcement)


class ExchangeClock:
    """The exchange's time as the shard knows it: the latest event time seen, plus local
    monotonic time elapsed since it arrived; never goes back."""

    __slots__ = ("_at_ns", "_floor", "latest_ms")

    def __init__(self) -> None:
        self.latest_ms = -1  # none seen yet
        self._at_ns = 0
        self._floor = 0

    def observe(self, event_ms: int, monotonic_ns: int) -> None:
        if event_ms > self.latest_ms:
            self.latest_ms = event_ms
            self._at_ns = monotonic_ns

    def now_ms(self, monotonic_ns: int) -> int | None:
        if self.latest_ms < 0:
            return None
        now = self.latest_ms + (monotonic_ns - self._at_ns) // 1_000_000
        self._floor = max(self._floor, now)
        return self._floor
