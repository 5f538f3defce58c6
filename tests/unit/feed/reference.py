"""An independent order book reconstruction for tests: stdlib json, string keys, no feed code."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from quantcore.localmode.source import default_recordings_dir

# The repository's recordings (recordings/binance-spot/README.md); $QUANTCORE_RECORDINGS overrides where they live.
DATA = default_recordings_dir()
BTC = DATA / "btcusdt_20240808.gz"
ETH = DATA / "ethusdt_20240808.gz"


def reference_books(path: Path, levels: int = 20) -> dict[int, tuple[list, list]]:
    """u -> (bids, asks) top-N after each applied diff, by the book procedure, naively."""
    bids: dict[str, float] = {}
    asks: dict[str, float] = {}
    buffered: list[dict] = []
    last: int | None = None
    out: dict[int, tuple[list, list]] = {}

    def apply(d: dict) -> None:
        for book, key in ((bids, "b"), (asks, "a")):
            for p, q in d[key]:
                if float(q) == 0:
                    book.pop(p, None)
                else:
                    book[p] = float(q)
        b = sorted(((float(p), q) for p, q in bids.items()), reverse=True)[:levels]
        a = sorted((float(p), q) for p, q in asks.items())[:levels]
        out[d["u"]] = (b, a)

    with gzip.open(path, "rt") as fh:
        for line in fh:
            doc = json.loads(line.split(" ", 1)[1])
            if "lastUpdateId" in doc:
                last = doc["lastUpdateId"]
                bids.update({p: float(q) for p, q in doc["bids"]})
                asks.update({p: float(q) for p, q in doc["asks"]})
                for d in buffered:
                    if d["u"] > last:
                        assert d["U"] <= last + 1
                        apply(d)
                        last = d["u"]
                continue
            if not doc["stream"].endswith("@depth@100ms"):
                continue
            d = doc["data"]
            if last is None:
                buffered.append(d)
            elif d["u"] > last:
                assert d["U"] == last + 1
                apply(d)
                last = d["u"]
    return out
