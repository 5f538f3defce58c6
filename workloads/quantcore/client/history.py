"""Reading the lake through the History RPC: every row of an interval, page by page.

A call returns at most the server's row limit and then ends with a continuation token; this
helper calls again with it until the interval is exhausted, so a caller sees one sequence of
pages. A call that breaks (the network, a restarting server) is resumed from the last page
received, never re-read from the start: each page carries the token that follows it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from quantcore.client.security import ClientCredentials
from quantcore.client.stream import CHANNEL_OPTIONS
from quantcore.historyrows import decode_columns
from quantcore.v1 import marketdata_pb2, marketdata_pb2_grpc

# Worth resuming from the last token: the server or the network failed, not the request.
_RESUMABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}


@dataclass(frozen=True)
class HistoryQuery:
    symbol: str
    start_ms: int  # exchange event time, inclusive
    end_ms: int  # exclusive
    kind: str = "signals"
    fields: tuple[str, ...] = ()  # empty: every column
    page_size: int = 0  # 0: the server's page maximum
    max_rows_per_call: int = 0  # 0: the server's row limit per call

    def request(self, page_token: str = "") -> marketdata_pb2.HistoryRequest:
        return marketdata_pb2.HistoryRequest(
            symbol=self.symbol,
            kind=self.kind,
            from_ms=self.start_ms,
            to_ms=self.end_ms,
            fields=list(self.fields),
            page_size=self.page_size,
            max_rows=self.max_rows_per_call,
            page_token=page_token,
        )


@dataclass
class HistoryStats:
    calls: int = 0
    pages: int = 0
    rows: int = 0
    resumed: int = 0  # calls that went on after a broken one


@dataclass
class HistoryPages:
    """`async for page in HistoryPages(target, query).pages(): ...`"""

    target: str
    query: HistoryQuery
    credentials: ClientCredentials = field(default_factory=ClientCredentials)
    retries: int = 3  # broken calls in a row before giving up
    stats: HistoryStats = field(default_factory=HistoryStats)

    async def pages(self) -> AsyncIterator[marketdata_pb2.HistoryPage]:
        token = ""
        failures = 0
        async with self.credentials.channel(self.target, CHANNEL_OPTIONS) as channel:
            stub = marketdata_pb2_grpc.MarketDataStub(channel)
            while True:
                self.stats.calls += 1
                pages = 0
                try:
                    call = stub.History(
                        self.query.request(token), metadata=self.credentials.metadata()
                    )
                    async for page in call:
                        failures = 0
                        pages += 1
                        self.stats.pages += 1
                        self.stats.rows += page.row_count
                        token = page.next_page_token
                        yield page
                except grpc.aio.AioRpcError as exc:
                    failures += 1
                    if exc.code() not in _RESUMABLE or failures > self.retries:
                        raise
                    self.stats.resumed += 1
                    await asyncio.sleep(0.1 * 2**failures)
                    continue
                if not token or not pages:  # a call without pages has nothing after it
                    return


async def history_rows(
    target: str,
    query: HistoryQuery,
    credentials: ClientCredentials | None = None,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Every row of `query`, as (column names, rows of Python values, None for null)."""
    names: list[str] = []
    rows: list[tuple[Any, ...]] = []
    pager = HistoryPages(target, query, credentials or ClientCredentials())
    async for page in pager.pages():
        page_names, page_rows = decode_columns(page)
        names = names or page_names
        rows.extend(page_rows)
    return names, rows


def history(
    target: str,
    symbol: str,
    start_ms: int,
    end_ms: int,
    *,
    kind: str = "signals",
    fields: Sequence[str] = (),
    credentials: ClientCredentials | None = None,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The blocking form of history_rows, for scripts: (column names, rows)."""
    query = HistoryQuery(symbol, start_ms, end_ms, kind, tuple(fields))
    return asyncio.run(history_rows(target, query, credentials))
