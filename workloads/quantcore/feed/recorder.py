"""Writes the recording format (`<recv ns> <json>` per line, gzip) from a live connection.

Combined-stream frames are written verbatim as they arrive. Each symbol's REST snapshot is
written bare, as in the repository's recordings, right after a depth frame of its own
symbol, so a reader can attribute it (see `recording.read_recording`).
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from quantcore.feed import binance
from quantcore.feed.binance import StreamConfig
from quantcore.feed.snapshots import SnapshotClient

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

log = logging.getLogger(__name__)


class Recorder:
    def __init__(
        self, out: Path, symbols: list[str], ws_url: str, rest_url: str, streams: StreamConfig
    ) -> None:
        self.out = out
        self.symbols = [s.upper() for s in symbols]
        self.ws_url = ws_url
        self.rest_url = rest_url
        self.streams = streams
        self.lines = 0
        self.lost = ""  # why the connection ended, when the exchange (not we) ended it
        self._held: dict[
            str, tuple[int, bytes]
        ] = {}  # snapshot waiting for its symbol's depth frame

    async def run(self, duration: float | None = None) -> int:
        """Records until `duration` passes, the task is cancelled (Ctrl-C, SIGTERM) or the
        connection is lost (`lost` says why); the gzip stream is complete in every case."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        url = binance.combined_url(self.ws_url, binance.streams_for(self.symbols, self.streams))
        client = SnapshotClient(self.rest_url)
        try:
            async with connect(url, max_size=16 << 20, compression=None) as ws:
                # Opened only once connected: a refused connection leaves no file behind.
                with gzip.open(self.out, "wb") as fh:
                    snapshots = asyncio.create_task(self._snapshots(client))
                    try:
                        await self._record(ws, fh, duration)
                    except ConnectionClosed as closed:
                        self.lost = f"connection lost: {closed}"
                    finally:
                        snapshots.cancel()
        finally:
            await client.close()
        return self.lines

    async def _record(
        self, ws: ClientConnection, fh: gzip.GzipFile, duration: float | None
    ) -> None:
        deadline = None if duration is None else time.monotonic() + duration
        while deadline is None or time.monotonic() < deadline:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                frame = await asyncio.wait_for(ws.recv(decode=False), timeout)
            except TimeoutError:
                break
            recv_ns = time.time_ns()
            if not frame.startswith(b'{"stream"'):
                continue  # subscription replies are not market data
            fh.write(b"%d %s\n" % (recv_ns, frame))
            self.lines += 1
            stream = frame[11 : frame.find(b'"', 11)].decode()
            symbol = binance.symbol_of_stream(stream)
            held = self._held.pop(symbol, None) if "@depth" in stream else None
            if held is not None:
                fh.write(b"%d %s\n" % held)
                self.lines += 1

    async def _snapshots(self, client: SnapshotClient) -> None:
        await asyncio.sleep(0.5)  # let diffs buffer first, as the book procedure expects
        for symbol in self.symbols:
            response = await client.depth(symbol)
            self._held[symbol] = (response.recv_ns, response.body)
