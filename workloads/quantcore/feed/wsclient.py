"""websockets' client connection with `wsframes.FrameSplitter` in its read path: complete text
frames go from the socket's read callback straight to a callback, every other frame to
websockets whole. `StreamConnection` opens its sockets with it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from quantcore.feed.wsframes import FrameSplitter

# A handshake response longer than this is not one the fast path waits for.
HANDSHAKE_MAX_BYTES = 64 << 10


@functools.cache
def inline_connection() -> Callable[..., Any]:
    """websockets' client connection, handing complete text frames straight to `on_text`.

    Built on first use, as the module imports websockets lazily. The bytes of the HTTP
    handshake response are held until its blank line and handed to websockets alone, so that
    when it switches to OPEN its frame parser sits at a frame boundary with nothing buffered.
    From there a `FrameSplitter` takes the socket's bytes: each complete text frame goes to
    `on_text`, every other frame (a fragmented or binary message, ping, pong, close) to
    websockets whole. A fragmented message is then read by `recv()` after frames that arrived
    later; the book's sequence check turns that reordering into a resync, never a wrong book
    (Binance does not fragment). A refused handshake leaves every byte to websockets.
    """
    from websockets.asyncio.client import ClientConnection
    from websockets.protocol import State

    class InlineConnection(ClientConnection):
        def __init__(
            self, protocol: Any, *, on_text: Callable[[bytes], None], max_size: int, **kwargs: Any
        ):
            super().__init__(protocol, **kwargs)
            self._on_text = on_text
            self._max_size = max_size
            self._head = bytearray()  # the handshake response, until its blank line
            # Made once the handshake is read; stopped at once when it did not open, so that
            # websockets then has every byte.
            self._splitter: FrameSplitter | None = None

        def data_received(self, data: bytes) -> None:
            if self._splitter is not None:
                self._splitter.feed(data)
                return
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > HANDSHAKE_MAX_BYTES:
                    self._give_up()  # let websockets refuse it
                return
            head, rest = bytes(self._head[: end + 4]), bytes(self._head[end + 4 :])
            self._head.clear()
            super().data_received(head)
            self._splitter = FrameSplitter(self._max_size, self._on_text, self._on_other)
            if self.protocol.state is not State.OPEN or self.protocol.extensions:
                self._splitter.stop()
            if rest:
                self._splitter.feed(rest)

        def _on_other(self, data: bytes) -> None:
            super().data_received(data)
            if self.protocol.state is not State.OPEN and self._splitter is not None:
                # websockets failed or is closing the connection: no more fast-path frames.
                self._splitter.stop()

        def eof_received(self) -> None:
            if self._splitter is None:
                self._give_up()
            super().eof_received()

        def _give_up(self) -> None:
            """No fast path: what is held of the handshake, and all after it, go to websockets."""
            head, self._head = bytes(self._head), bytearray()
            self._splitter = FrameSplitter(self._max_size, self._on_text, self._on_other)
            self._splitter.stop()
            if head:
                self._splitter.feed(head)

    return InlineConnection
