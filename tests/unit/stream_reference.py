"""An independent plain-Python reference for the stream job's signals (used by the tests).

Written from the definitions in quantcore.stream.signals' docstring, not from its code.
"""

from __future__ import annotations

import math

from quantcore.events import BookRecord, TradeFlowRecord


def _imb(b: float, a: float) -> float:
    return (b - a) / (b + a) if b + a != 0 else math.nan


def book(rec: BookRecord, max_levels: int = 20) -> dict[str, float]:
    bp, bq = rec.bid_px[:max_levels], rec.bid_qty[:max_levels]
    ap, aq = rec.ask_px[:max_levels], rec.ask_qty[:max_levels]
    mid = (bp[0] + ap[0]) / 2.0

    def side(px: list[float], qty: list[float]) -> float:
        total = 0.0
        for p, q in zip(px, qty, strict=True):
            total += q / (1.0 + abs(p - mid) / mid * 1e4)
        return total

    def levels(n: int) -> float:
        return _imb(sum(bq[:n], 0.0), sum(aq[:n], 0.0))

    if (
        rec.prev_bid_px is None
        or rec.prev_bid_qty is None
        or rec.prev_ask_px is None
        or rec.prev_ask_qty is None
    ):
        ofi = 0.0
    else:
        ofi = 0.0
        if bp[0] >= rec.prev_bid_px:
            ofi += bq[0]
        if bp[0] <= rec.prev_bid_px:
            ofi -= rec.prev_bid_qty
        if ap[0] <= rec.prev_ask_px:
            ofi -= aq[0]
        if ap[0] >= rec.prev_ask_px:
            ofi += rec.prev_ask_qty
    spread = ap[0] - bp[0]
    return {
        "best_bid": bp[0],
        "best_ask": ap[0],
        "best_bid_qty": bq[0],
        "best_ask_qty": aq[0],
        "mid": mid,
        "microprice": (bp[0] * aq[0] + ap[0] * bq[0]) / (bq[0] + aq[0])
        if bq[0] + aq[0]
        else math.nan,
        "spread": spread,
        "spread_bps": spread / mid * 1e4,
        "spread_ticks": spread / rec.tick_size,
        "obi_1": levels(1),
        "obi_5": levels(5),
        "obi_10": levels(10),
        "obi_20": levels(20),
        "obi_max": levels(max_levels),
        "max_levels": max_levels,
        "obi_weighted": _imb(side(bp, bq), side(ap, aq)),
        "ofi_l1": ofi,
    }


def trade_flow(rec: TradeFlowRecord) -> dict[str, float]:
    """Trade flow from a flow record: per window, (buy - sell) / (buy + sell) and buy + sell."""
    out: dict[str, float] = {"window_end_ms": rec.as_of_ms}
    for w in (1, 5, 30):
        buy, sell = getattr(rec, f"buy_volume_{w}s"), getattr(rec, f"sell_volume_{w}s")
        out[f"volume_{w}s"] = buy + sell
        out[f"tfi_{w}s"] = (buy - sell) / (buy + sell) if buy + sell else math.nan
    return out


def close(a: float, b: float, tol: float = 1e-9) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol
