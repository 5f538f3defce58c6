"""Where signals live in Redis: the layout shared by the stream job's sink and the serving tier.

Per symbol, one hash `qc:signal:{SYMBOL}` holds, for each kind of update ("book", "trades"),
the last accepted exchange sequence (`<kind>_seq`) and the encoded `SignalUpdate` (`<kind>`).
Every accepted update is also PUBLISHed, as the same bytes, on `qc:updates:{SYMBOL}`; the
serving tier holds one pattern subscription to UPDATES_PATTERN. `qc:symbols` lists every
symbol ever written.
"""

from __future__ import annotations

KINDS = ("book", "trades")
SYMBOLS_KEY = "qc:symbols"
UPDATES_PATTERN = "qc:updates:*"


def state_key(symbol: str) -> str:
    return f"qc:signal:{symbol}"


def channel(symbol: str) -> str:
    return f"qc:updates:{symbol}"


def seq_field(kind: str) -> str:
    return f"{kind}_seq"
