"""A History call's request checked and bounded, and its page tokens. Pure: no grpc, no lake.

The row limit per call is truncation, not refusal: a call asking for more than the server's
limit (or for everything, max_rows 0) gets the limit's worth of rows, the last page carrying a
token that goes on. One client cannot hold the server for a whole lake in one call, and a
client that wants the whole interval still gets it, call by call, each call a fair share.

A page token is the position of the page's last row in the lake's total order
(quantcore.lakequery.Position) and a fingerprint of the request it belongs to, as url-safe
base64 of JSON. It is not secret (it names a row the caller was allowed to read); the
fingerprint only stops a token from being replayed against another symbol, kind, interval or
column list, where the position would mean nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass

from quantcore import lake, lakequery
from quantcore.v1 import marketdata_pb2

_SYMBOL = re.compile(r"^[A-Z0-9]{1,32}$")
DEFAULT_KIND = "signals"


class HistoryRequestError(ValueError):
    """A History request the server refuses with INVALID_ARGUMENT."""


@dataclass(frozen=True)
class HistoryLimits:
    """Rows one call returns at most, and rows per page at most (a page is one message: the
    page maximum keeps it under the server's message size with books' level lists)."""

    max_rows_per_call: int = 100_000
    max_page_rows: int = 5_000

    def __post_init__(self) -> None:
        if self.max_rows_per_call < 1 or self.max_page_rows < 1:
            raise ValueError("history limits must be at least one row")


@dataclass(frozen=True)
class HistoryCall:
    kind: str
    symbol: str
    span: lake.Interval
    fields: tuple[str, ...]
    page_size: int  # rows per page, within the server's maximum
    max_rows: int  # rows this call returns at most, within the server's limit
    after: lakequery.Position | None  # resume strictly after this row
    fingerprint: str


def fingerprint(symbol: str, kind: str, span: lake.Interval, fields: tuple[str, ...]) -> str:
    text = json.dumps([symbol, kind, span.start_ms, span.end_ms, list(fields)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checked(
    request: marketdata_pb2.HistoryRequest, limits: HistoryLimits, root: str
) -> HistoryCall:
    """The call a request makes; HistoryRequestError says what is wrong with it. `root`: the
    lake's directory, which tokens name files relative to."""
    symbol = request.symbol.strip().upper()
    if not _SYMBOL.match(symbol):
        raise HistoryRequestError(f"not an exchange symbol: {request.symbol!r}")
    kind = request.kind or DEFAULT_KIND
    if kind not in lake.TABLES:
        raise HistoryRequestError(f"unknown kind {kind!r}; known: {', '.join(lake.TABLES)}")
    if request.from_ms < 0:
        raise HistoryRequestError(f"from_ms {request.from_ms} is before the epoch")
    if request.to_ms <= request.from_ms:
        raise HistoryRequestError(
            f"to_ms ({request.to_ms}) must be after from_ms ({request.from_ms})"
        )
    fields = tuple(f.strip() for f in request.fields)
    repeated = sorted({f for f in fields if fields.count(f) > 1})
    if repeated or not all(fields):
        raise HistoryRequestError(f"fields must be distinct column names: {list(fields)!r}")
    span = lake.Interval(request.from_ms, request.to_ms)
    max_rows = min(request.max_rows or limits.max_rows_per_call, limits.max_rows_per_call)
    page_size = min(request.page_size or limits.max_page_rows, limits.max_page_rows, max_rows)
    mark = fingerprint(symbol, kind, span, fields)
    after = read_token(request.page_token, mark, root) if request.page_token else None
    return HistoryCall(kind, symbol, span, fields, page_size, max_rows, after, mark)


def page_token(position: lakequery.Position, mark: str, root: str) -> str:
    """The token resuming right after `position`, for the request `mark` fingerprints."""
    prefix = root.rstrip("/") + "/"
    file = position.file[len(prefix) :] if position.file.startswith(prefix) else position.file
    body = {"q": mark, "t": position.event_time_ms, "s": position.sequence, "f": file}
    body["r"] = position.row
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_token(token: str, mark: str, root: str) -> lakequery.Position:
    """The position a token resumes after; HistoryRequestError when it is not a token of this
    request."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        position = lakequery.Position(
            int(body["t"]), int(body["s"]), str(body["f"]), int(body["r"])
        )
        belongs = body["q"] == mark
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise HistoryRequestError("page_token is not a token this server gave") from None
    if not belongs:
        raise HistoryRequestError(
            "page_token belongs to another request: keep symbol, kind, interval and fields"
        )
    # The file only orders rows (a literal in the query's WHERE), it is never opened.
    file = position.file if position.file.startswith("/") else f"{root.rstrip('/')}/{position.file}"
    return lakequery.Position(position.event_time_ms, position.sequence, file, position.row)
