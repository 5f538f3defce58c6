"""The replay server's 24 h ticker overrides: a request body naming quote volumes per symbol,
validated before any is applied (a bad request changes nothing)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import orjson


class TickerOverrideError(ValueError):
    """The override request is not a JSON object of known symbol -> non-negative volume."""


def parse_overrides(body: bytes, symbols: Iterable[str]) -> dict[str, float]:
    """`{"BTCUSDT": 1e9, "ethusdt": "5e8"}` -> {"BTCUSDT": 1e9, "ETHUSDT": 5e8}; every symbol
    must be one the replay serves and every volume a finite number >= 0."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise TickerOverrideError(f"the body is not JSON: {error}") from None
    if not isinstance(doc, dict) or not doc:
        raise TickerOverrideError(
            'expected a JSON object of symbol -> quoteVolume, e.g. {"BTCUSDT": 1e9}'
        )
    served = set(symbols)
    out: dict[str, float] = {}
    for key, value in doc.items():
        symbol = str(key).upper()
        if symbol not in served:
            raise TickerOverrideError(f"{symbol} is not a symbol this replay serves")
        if isinstance(value, bool):
            raise TickerOverrideError(f"{symbol}: the quote volume must be a number, not {value}")
        try:
            volume = float(value)
        except (TypeError, ValueError):
            raise TickerOverrideError(
                f"{symbol}: the quote volume must be a number, not {value!r}"
            ) from None
        if not math.isfinite(volume) or volume < 0:
            raise TickerOverrideError(f"{symbol}: the quote volume must be finite and >= 0")
        out[symbol] = volume
    return out
