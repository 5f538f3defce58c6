"""Server-to-client websocket frames split off the byte stream (RFC 6455, section 5.2).

The shard's hot path. A complete, unfragmented text frame goes to `on_text` as its payload,
with no per-frame generator, event list or message queue. Every other frame (ping, pong,
close, the pieces of a fragmented message, binary) goes to `on_other` whole, so the full
websocket implementation behind it only ever receives complete frames and stays at a frame
boundary: it answers pings, assembles fragments and closes as it always would.

What the splitter does not vouch for ends the fast path: a masked frame (a server must not
mask), a reserved bit (an extension it does not speak), a frame over `max_size`, a close
frame. That frame and every byte after it go to `on_other` unparsed, and the implementation
behind it fails or closes the connection with the right code. `on_other` may end the fast
path itself (`stop()`), when the implementation behind it is no longer open.
"""

from __future__ import annotations

from collections.abc import Callable

FIN = 0x80
RESERVED_BITS = 0x70
MASKED = 0x80
OPCODE = 0x0F
CONTINUATION, TEXT, BINARY, CLOSE = 0x0, 0x1, 0x2, 0x8
LENGTH_16, LENGTH_64 = 126, 127  # the 7-bit length's escapes to a 2- or 8-byte length


class FrameSplitter:
    """Feed it the bytes a socket delivers; it calls `on_text(payload)` and `on_other(bytes)`
    in stream order."""

    def __init__(
        self,
        max_size: int,
        on_text: Callable[[bytes], None],
        on_other: Callable[[bytes], None],
    ) -> None:
        self.max_size = max_size
        self._on_text = on_text
        self._on_other = on_other
        self._partial = bytearray()  # the start of a frame still being received
        self._fragmented = False  # inside a fragmented message: its frames go to on_other
        self.handed_over = False  # on_other receives the raw stream from here on

    def feed(self, data: bytes) -> None:
        if self.handed_over:
            self._on_other(data)
            return
        if self._partial:
            self._partial += data
            buffer: bytes | bytearray = self._partial
        else:
            buffer = data
        used = self._split(buffer)
        if buffer is self._partial:
            del self._partial[:used]
        elif used < len(buffer):
            self._partial = bytearray(buffer[used:])

    def stop(self) -> None:
        """Hand every byte from here on to `on_other` unparsed."""
        self.handed_over = True

    def _split(self, buf: bytes | bytearray) -> int:
        """Hands on every complete frame in `buf`; returns how many bytes that used."""
        pos, size = 0, len(buf)
        while size - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            length, header = second & 0x7F, 2
            if length == LENGTH_16:
                if size - pos < 4:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 4]), 4
            elif length == LENGTH_64:
                if size - pos < 10:
                    break
                length, header = int.from_bytes(buf[pos + 2 : pos + 10]), 10
            if second & MASKED or first & RESERVED_BITS or length > self.max_size:
                return self._hand_over(buf, pos)
            end = pos + header + length
            if end > size:
                break
            if first == FIN | TEXT and not self._fragmented:
                self._on_text(bytes(buf[pos + header : end]))
            else:
                opcode = first & OPCODE
                if opcode in (CONTINUATION, TEXT, BINARY):
                    self._fragmented = not first & FIN
                self._on_other(bytes(buf[pos:end]))
                if opcode == CLOSE or self.handed_over:
                    return self._hand_over(buf, end)
            pos = end
        return pos

    def _hand_over(self, buf: bytes | bytearray, pos: int) -> int:
        self.handed_over = True
        if pos < len(buf):
            self._on_other(bytes(buf[pos:]))
        return len(buf)
