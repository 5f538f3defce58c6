"""Frames in, topic records out: the pure core of a feed shard (decode, sync books, trade-flow
windows, encode).

The shard feeds it websocket frames and REST snapshots; `records_from_recording` feeds it a
recording. Both get exactly the same records, handed to an `emit(kind, symbol, value)` callback.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from quantcore.feed import codec
from quantcore.feed.book import BookSync, Outcome, Step, SyncCounters, SyncState
from quantcore.feed.exchange import Exchange
from quantcore.feed.flowpacing import MIN_GAP_NS, Pacer
from quantcore.feed.messages import (
    BookTicker,
    DepthDiff,
    DepthSnapshot,
    Message,
    PartialDepth,
    Rejected,
    Trade,
)
from quantcore.feed.tradeflow import ExchangeClock, Flow, TradeFlows

# Record kinds; the shard maps them to topic names.
RAW = "raw"
BOOK = "book"
TRADES = "trades"
QUARANTINE = "quarantine"
FLOW = "flow"

Emit = Callable[[str, str | None, bytes], None]

_RESETS = frozenset({Outcome.GAP, Outcome.CROSSED, Outcome.SNAPSHOT_STALE})

log = logging.getLogger(__name__)

# Used only until the shard learns a symbol's real tick size (Binance prices have 8 decimals).
FALLBACK_TICK_SIZE = 1e-8


class Normalizer:
    """Per-symbol book sync plus encoding; knows nothing about sockets or Kafka."""

    def __init__(
        self,
        exchange: Exchange,
        emit: Emit,
        *,
        levels: int = 20,
        tick_sizes: Mapping[str, float] | None = None,
        max_buffer: int = 10_000,
        partial_books: bool = False,
        clock: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], int] = time.monotonic_ns,
        on_snapshot_wanted: Callable[[str], None] | None = None,
        trade_flow: bool = True,
        on_trade_flow: Callable[[], None] | None = None,
        flow_min_gap_ns: int = MIN_GAP_NS,
    ) -> None:
        # The exchange's parsers (the seam): bound once, as on_frame runs for every frame.
        self._decode_frame = exchange.decode_frame
        self._decode_snapshot = exchange.decode_snapshot
        self._emit = emit
        # Told when a symbol starts waiting for a snapshot (added, or its book reset), so the
        # owner can ask for one at once rather than on its next scan.
        self._on_snapshot_wanted = on_snapshot_wanted
        self.levels = levels
        self.tick_sizes: dict[str, float] = dict(exchange.KNOWN_TICK_SIZES)
        self.tick_sizes.update(tick_sizes or {})
        self._max_buffer = max_buffer
        self._clock = clock
        self._monotonic = monotonic
        # Trade flow (quantcore.feed.tradeflow): windows per symbol, rolled on by the exchange's
        # clock as the shard knows it; `on_trade_flow` wakes whoever emits the decay ticks.
        self.trade_flow = trade_flow
        self.flows = TradeFlows()
        self.exchange_clock = ExchangeClock()
        self._flow_uncovered: set[str] = set()  # symbols whose first event is still to come
        self._on_trade_flow = on_trade_flow
        # At most one trade-flow record per symbol per gap (quantcore.feed.flowpacing); a held
        # record is (flow, event time ms, receive ns), released by `release_flows`.
        self._flow_pacer: Pacer[tuple[Flow, int, int]] = Pacer(flow_min_gap_ns)
        # Pushed top-N books feed the book topic only when the shard keeps no local book,
        # so the topic never carries two interleaved versions of one symbol.
        self.partial_books = partial_books
        self.syncs: dict[str, BookSync] = {}
        self._partials: dict[str, PartialDepth] = {}
        # Exchange ids already published: the overlap of a connection handover repeats frames.
        self._last_trade: dict[str, int] = {}
        self._last_ticker: dict[str, int] = {}
        self.last_update: dict[str, tuple[int, int]] = {}  # symbol -> (event ms, recv ns)
        self.duplicates = 0
        self.quarantined: Counter[str] = Counter()
        self.messages: Counter[str] = Counter()  # by message type, e.g. "DepthDiff"
        self.unrouted = 0  # frames for symbols this shard does not serve (late after UNSUBSCRIBE)

    # --- symbols ---
    def add_symbol(self, symbol: str) -> None:
        if symbol not in self.syncs:
            self.syncs[symbol] = BookSync(symbol, levels=self.levels, max_buffer=self._max_buffer)
            self.flows.add(symbol)
            self._flow_uncovered.add(symbol)
            if self._on_snapshot_wanted is not None:
                self._on_snapshot_wanted(symbol)

    def remove_symbol(self, symbol: str) -> None:
        self.syncs.pop(symbol, None)
        self._partials.pop(symbol, None)
        self._last_trade.pop(symbol, None)
        self._last_ticker.pop(symbol, None)
        self.last_update.pop(symbol, None)
        self.flows.remove(symbol)
        self._flow_pacer.forget(symbol)
        self._flow_uncovered.discard(symbol)

    @property
    def symbols(self) -> Iterable[str]:
        return self.syncs.keys()

    def wants_snapshot(self, symbol: str) -> bool:
        sync = self.syncs.get(symbol)
        return sync is not None and sync.wants_snapshot

    def counters(self, symbol: str) -> SyncCounters:
        return self.syncs[symbol].counters

    def snapshots_wanted(self) -> list[tuple[str, int]]:
        """(symbol, failed sync attempts so far) of every book that waits for a snapshot."""
        return [(symbol, s.attempts) for symbol, s in self.syncs.items() if s.wants_snapshot]

    def snapshot_failed(self, symbol: str) -> None:
        """A snapshot for `symbol` could not be had: one more attempt to back off on."""
        sync = self.syncs.get(symbol)
        if sync is not None:
            sync.attempts += 1

    def live_symbols(self) -> list[str]:
        """Symbols whose book is synced and has published a record since they were added.

        What the operator waits for before another shard lets go of a symbol it hands over.
        A book record sets `last_update`, which `remove_symbol` clears; a shard without a
        local book (partial books) publishes straight from the pushed top-N. With trade flow
        on, its windows must be warm too (covered for the longest window), so the losing shard
        keeps publishing trade flow until the gaining shard's is exact.
        """
        if self.partial_books:
            books = [s for s in self.syncs if s in self._partials]
        else:
            books = [
                s
                for s, sync in self.syncs.items()
                if sync.state is SyncState.LIVE and s in self.last_update
            ]
        if self.trade_flow:
            now = self.exchange_clock.now_ms(self._monotonic())
            books = [s for s in books if now is not None and self.flows.warm(s, now)]
        return sorted(books)

    def books(self, now_ns: int) -> dict[str, dict[str, Any]]:
        """Each symbol's book as health and metrics show it: state, counters, last update id,
        and the lag (receive minus event time) and age of its last update (None before one)."""
        report: dict[str, dict[str, Any]] = {}
        for symbol, sync in self.syncs.items():
            c = sync.counters
            last = self.last_update.get(symbol)
            report[symbol] = {
                "state": sync.state.value,
                "applied": c.applied,
                "dropped": c.dropped,
                "gaps": c.gaps,
                "crossed": c.crossed,
                "resyncs": c.resyncs,
                "stale_snapshots": c.stale_snapshots,
                "last_update_id": sync.last_update_id,
                "lag_s": None if last is None else (last[1] - last[0] * 1_000_000) / 1e9,
                "age_s": None if last is None else (now_ns - last[1]) / 1e9,
            }
        return report

    def reset(self, symbol: str, reason: str, recv_ns: int) -> None:
        """Drop a symbol's book (its frames were interrupted) and log a reset marker."""
        sync = self.syncs.get(symbol)
        if sync is None:
            return
        sync.reset()
        # Trades may have been missed as well: the windows start over and warm up again.
        self.flows.restart(symbol)
        self._flow_uncovered.add(symbol)
        self._reset_marker(symbol, reason, recv_ns)

    # --- input ---
    def on_frame(self, frame: bytes, recv_ns: int) -> Message:
        msg = self._decode_frame(frame, recv_ns)
        cls = type(msg)
        self.messages[cls.__name__] += 1
        if cls is DepthDiff:
            diff: DepthDiff = msg  # type: ignore[assignment]
            sync = self.syncs.get(diff.symbol)
            if sync is None:
                self.unrouted += 1
                return msg
            event_ms = diff.event_time_ms
            if event_ms > self.exchange_clock.latest_ms:
                self.exchange_clock.observe(event_ms, self._monotonic())
            if self._flow_uncovered and diff.symbol in self._flow_uncovered:
                self._flow_uncovered.discard(diff.symbol)
                self.flows.seen(diff.symbol, event_ms)
            self._emit(RAW, diff.symbol, codec.raw_line(recv_ns, frame))
            self._step(sync, sync.on_diff(diff))
        elif cls is Trade:
            trade: Trade = msg  # type: ignore[assignment]
            if trade.symbol not in self.syncs:
                self.unrouted += 1
                return msg
            if trade.trade_id <= self._last_trade.get(trade.symbol, -1):
                self.duplicates += 1
                return msg
            self._last_trade[trade.symbol] = trade.trade_id
            self._emit(RAW, trade.symbol, codec.raw_line(recv_ns, frame))
            self._emit(TRADES, trade.symbol, codec.trade_record(trade, self._clock()))
            if self.trade_flow:
                self._on_trade(trade)
        elif cls is BookTicker or cls is PartialDepth:
            symbol = msg.symbol  # type: ignore[union-attr]
            if symbol not in self.syncs:
                self.unrouted += 1
                return msg
            if cls is BookTicker:
                update_id = msg.update_id  # type: ignore[union-attr]
                if update_id <= self._last_ticker.get(symbol, -1):
                    self.duplicates += 1
                    return msg
                self._last_ticker[symbol] = update_id
            self._emit(RAW, symbol, codec.raw_line(recv_ns, frame))
            if self._flow_uncovered and symbol in self._flow_uncovered:
                # No event time in these frames: the exchange clock stands in for it.
                now = self.exchange_clock.now_ms(self._monotonic())
                if now is not None:
                    self._flow_uncovered.discard(symbol)
                    self.flows.seen(symbol, now)
            if cls is PartialDepth and self.partial_books:
                self._on_partial(msg)  # type: ignore[arg-type]
        elif cls is Rejected:
            self.quarantine(msg)  # type: ignore[arg-type]
        return msg

    def on_snapshot_body(self, body: bytes, symbol: str, recv_ns: int) -> DepthSnapshot | Rejected:
        """A REST depth response for `symbol`: log it verbatim, then sync the book on it."""
        snapshot = self._decode_snapshot(body, symbol, recv_ns)
        if isinstance(snapshot, Rejected):
            self.quarantine(snapshot)
            return snapshot
        self.on_snapshot(snapshot, body)
        return snapshot

    def on_snapshot(self, snapshot: DepthSnapshot, body: bytes | None = None) -> Step | None:
        sync = self.syncs.get(snapshot.symbol)
        if sync is None:
            return None
        if body is not None:
            self._emit(RAW, snapshot.symbol, codec.raw_line(snapshot.recv_ns, body))
        step = sync.on_snapshot(snapshot)
        self._step(sync, step)
        if step.outcome is Outcome.SNAPSHOT_LOADED:
            log.info(
                "book synced at update %d (%d buffered diffs applied over the snapshot)",
                sync.last_update_id,
                len(step.updates),
                extra={
                    "symbol": snapshot.symbol,
                    "event": "book_synced",
                    "update_id": sync.last_update_id,
                    "replayed": len(step.updates),
                },
            )
        return step

    def quarantine(self, rejected: Rejected) -> None:
        kind = rejected.reason.split(":")[0]
        self.quarantined[kind] += 1
        self._emit(QUARANTINE, rejected.symbol, codec.quarantine_record(rejected))
        count = self.quarantined[kind]
        if count & (count - 1) == 0:  # the 1st, 2nd, 4th, 8th...: a broken stream cannot flood
            log.warning(
                "input refused (%s), %d so far of this kind",
                rejected.reason,
                count,
                extra={
                    "symbol": rejected.symbol,
                    "event": "quarantined",
                    "reason": kind,
                    "quarantined": count,
                },
            )

    # --- trade flow ---
    def _on_trade(self, trade: Trade) -> None:
        if trade.event_time_ms > self.exchange_clock.latest_ms:
            self.exchange_clock.observe(trade.event_time_ms, self._monotonic())
        if trade.symbol in self._flow_uncovered:
            self._flow_uncovered.discard(trade.symbol)
            self.flows.seen(trade.symbol, trade.trade_time_ms)
        flow = self.flows.on_trade(
            trade.symbol, trade.trade_id, trade.trade_time_ms, trade.qty, trade.buyer_is_maker
        )
        if flow is not None:
            self._offer_flow(flow, trade.event_time_ms, trade.recv_ns)
        if self._on_trade_flow is not None:
            self._on_trade_flow()

    def flow_ticks(self) -> int:
        """Emit the decay ticks due by the exchange clock now, and the paced records whose
        gap has ended; returns how many ticks were due."""
        mono = self._monotonic()
        now = self.exchange_clock.now_ms(mono)
        ticks = []
        if now is not None and self.flows.next_due is not None and self.flows.next_due <= now:
            ticks = self.flows.due(now)
            emitted_ns = self._clock()
            for flow in ticks:
                self._offer_flow(flow, flow.as_of_ms, emitted_ns, mono)
        for flow, event_time_ms, recv_ns in self._flow_pacer.due(mono):
            self._emit_flow(flow, event_time_ms, recv_ns)
        return len(ticks)

    def flush_flows(self) -> None:
        """Emit every paced record still held, whatever its gap (the input has ended)."""
        for flow, event_time_ms, recv_ns in self._flow_pacer.due(2**63):
            self._emit_flow(flow, event_time_ms, recv_ns)

    def next_flow_tick_s(self) -> float | None:
        """Seconds (local time) until the next decay tick or paced record is due; None: none
        pending."""
        mono = self._monotonic()
        waits = []
        due = self.flows.next_due
        now = self.exchange_clock.now_ms(mono)
        if due is not None and now is not None:
            waits.append((due - now) / 1000)
        release = self._flow_pacer.next_release_ns()
        if release is not None:
            waits.append((release - mono) / 1e9)
        return max(0.0, min(waits)) if waits else None

    def _offer_flow(
        self, flow: Flow, event_time_ms: int, recv_ns: int, mono: int | None = None
    ) -> None:
        item = (flow, event_time_ms, recv_ns)
        now = self._monotonic() if mono is None else mono
        if self._flow_pacer.offer(flow.symbol, item, now) is not None:
            self._emit_flow(flow, event_time_ms, recv_ns)

    def _emit_flow(self, flow: Flow, event_time_ms: int, recv_ns: int) -> None:
        self._emit(
            FLOW, flow.symbol, codec.flow_record(flow, event_time_ms, recv_ns, self._clock())
        )

    # --- internals ---
    def _step(self, sync: BookSync, step: Step) -> None:
        symbol = sync.symbol
        tick = self.tick_sizes.get(symbol, FALLBACK_TICK_SIZE)
        for update in step.updates:
            self._emit(BOOK, symbol, codec.book_record(update, symbol, tick, self._clock()))
        if step.updates:
            last = step.updates[-1].diff
            self.last_update[symbol] = (last.event_time_ms, last.recv_ns)
        outcome = step.outcome
        if outcome is not Outcome.APPLIED and outcome in _RESETS:  # (an Enum hashes in Python)
            self._reset_marker(symbol, outcome.value, self._clock())

    def _on_partial(self, depth: PartialDepth) -> None:
        prev = self._partials.get(depth.symbol)
        if prev is not None and depth.last_update_id <= prev.last_update_id:
            return  # a duplicate or an older push: books only move forward
        self._partials[depth.symbol] = depth
        tick = self.tick_sizes.get(depth.symbol, FALLBACK_TICK_SIZE)
        self._emit(BOOK, depth.symbol, codec.partial_book_record(depth, prev, tick, self._clock()))

    def _reset_marker(self, symbol: str, reason: str, recv_ns: int) -> None:
        log.warning(
            "book reset (%s): resyncing from a snapshot",
            reason,
            extra={"symbol": symbol, "event": "book_reset", "reason": reason},
        )
        marker = orjson.dumps({"quantcore": "reset", "symbol": symbol, "reason": reason})
        self._emit(RAW, symbol, codec.raw_line(recv_ns, marker))
        if self._on_snapshot_wanted is not None:
            self._on_snapshot_wanted(symbol)
