"""The universe selector: top N symbols by 24 h quote volume, with hysteresis.

`select` is pure: a followed symbol stays while it ranks within top + hysteresis, so rank
jitter around the cut-off does not churn shards. `fetch_tickers` reads the exchange's
24 h ticker endpoint (`/api/v3/ticker/24hr`; the replay server serves it too).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from quantcore.operator.api import Universe

TICKER_PATH = "/api/v3/ticker/24hr"


@dataclass(frozen=True)
class Ticker:
    symbol: str
    quote_volume: float


class _TickerDoc(BaseModel):
    """One entry of the exchange's 24 h ticker array (only what we read)."""

    model_config = ConfigDict(extra="ignore")
    symbol: str
    quoteVolume: float  # the exchange's field name


def rank(tickers: Iterable[Ticker], universe: Universe) -> list[str]:
    """Candidate symbols for the quote asset, best first (ties broken by name)."""
    excluded = set(universe.exclude)
    candidates = [
        t
        for t in tickers
        if t.symbol.endswith(universe.quote_asset)
        and t.symbol != universe.quote_asset
        and t.symbol not in excluded
        and t.quote_volume > 0
    ]
    candidates.sort(key=lambda t: (-t.quote_volume, t.symbol))
    return [t.symbol for t in candidates]


def select(ranked: Sequence[str], current: Iterable[str], top: int, hysteresis: int) -> list[str]:
    """The next followed set: incumbents ranked within top + hysteresis stay; the best-ranked
    newcomers fill the free places. Always min(top, len(ranked)) symbols, sorted."""
    position = {symbol: i for i, symbol in enumerate(ranked)}
    band = top + hysteresis
    stay = sorted(
        (s for s in set(current) if position.get(s, band) < band), key=lambda s: position[s]
    )[:top]
    chosen = set(stay)
    for symbol in ranked:
        if len(chosen) >= top:
            break
        chosen.add(symbol)
    return sorted(chosen)


def parse_tickers(text: str) -> list[Ticker]:
    """The ticker endpoint's JSON array -> Tickers; entries that do not parse are skipped."""
    docs = TypeAdapter(list[dict[str, object]]).validate_json(text)
    out: list[Ticker] = []
    for doc in docs:
        try:
            parsed = _TickerDoc.model_validate(doc)
        except ValidationError:
            continue  # one odd entry must not hide the whole universe
        out.append(Ticker(parsed.symbol.upper(), parsed.quoteVolume))
    return out


def ticker_url(universe: Universe, rest_url: str) -> str:
    return universe.ticker_url or rest_url.rstrip("/") + TICKER_PATH


def fetch_tickers(url: str, timeout_s: float = 10.0) -> list[Ticker]:
    """GET the 24 h ticker (blocking: the reconcile runs in kopf's worker threads)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return parse_tickers(response.read().decode())
