"""The exchange seam: the little the shard's data path needs from one exchange's protocol.

An exchange is a module with these names (`quantcore.feed.binance` is the one today); the
shard hands it to the `Normalizer`, which never names an exchange itself. A second exchange is
one new module beside `binance`, not edits through the feed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from quantcore.feed.messages import DepthSnapshot, Message, Rejected


class Exchange(Protocol):
    @property
    def KNOWN_TICK_SIZES(self) -> Mapping[str, float]:
        """Tick sizes known before the exchange is asked (symbol -> price increment)."""
        ...

    @property
    def MAX_STREAMS_PER_CONNECTION(self) -> int: ...

    def decode_frame(self, frame: bytes, recv_ns: int) -> Message:
        """One websocket text frame -> a validated message, or `Rejected` saying why."""
        ...

    def decode_snapshot(self, body: bytes, symbol: str, recv_ns: int) -> DepthSnapshot | Rejected:
        """A REST depth response for `symbol` -> its snapshot, or `Rejected` saying why."""
        ...

    def symbol_of_stream(self, stream: str) -> str:
        """The symbol a stream name belongs to."""
        ...
