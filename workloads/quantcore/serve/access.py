"""Who may call what, and how much of the server one identity may hold. Pure: no grpc I/O.

`authenticate` turns a call's metadata into a `Grant` (or refuses it), `authorize` checks a
grant against one request, and `Quotas` counts each identity's open streams so no single
client takes every slot. Every refusal is a `Refused` carrying the status code the client
gets and a reason from `REASONS`, the bounded label the refusal metric counts by.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc

from quantcore.serve.tokens import Grant, TokenTable

# Refusal reasons: the metric's label values (bounded) and the status code of each.
REASONS: dict[str, grpc.StatusCode] = {
    "missing_token": grpc.StatusCode.UNAUTHENTICATED,
    "bad_token": grpc.StatusCode.UNAUTHENTICATED,
    "method_denied": grpc.StatusCode.PERMISSION_DENIED,
    "symbol_denied": grpc.StatusCode.PERMISSION_DENIED,
    "stream_quota": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "symbol_quota": grpc.StatusCode.RESOURCE_EXHAUSTED,
}

# Authentication off (no token file): every caller is this one, unlimited, identity.
ANONYMOUS = Grant("anonymous")


class Refused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        assert reason in REASONS, reason
        self.reason = reason
        self.message = message

    @property
    def code(self) -> grpc.StatusCode:
        return REASONS[self.reason]


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The token of the `authorization: Bearer <token>` header, if any."""
    for key, value in metadata:
        if key.lower() != "authorization":
            continue
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def authenticate(table: TokenTable | None, metadata: Iterable[tuple[str, str | bytes]]) -> Grant:
    """The caller's grant. `table` None: authentication is off and everyone is ANONYMOUS."""
    if table is None:
        return ANONYMOUS
    token = bearer_token(metadata)
    if token is None:
        raise Refused("missing_token", "no bearer token: send `authorization: Bearer <token>`")
    grant = table.lookup(token)
    if grant is None:
        raise Refused("bad_token", "the bearer token is not valid")
    return grant


def authorize(grant: Grant, method: str, symbols: frozenset[str] | None) -> frozenset[str] | None:
    """The symbols this grant lets `method` read of `symbols` (None: every symbol).

    Asking for every symbol narrows to the grant's symbols; naming one outside them is
    refused, so a client learns it asked for too much instead of silently getting less.
    """
    if grant.methods is not None and method not in grant.methods:
        raise Refused("method_denied", f"{grant.identity} may not call {method}")
    if grant.symbols is None:
        return symbols
    if symbols is None:
        return grant.symbols
    denied = sorted(symbols - grant.symbols)
    if denied:
        raise Refused("symbol_denied", f"{grant.identity} may not read {denied[:5]!r}")
    return symbols


@dataclass(frozen=True)
class Limits:
    """Per-identity limits; 0 means none. ANONYMOUS (authentication off) is never limited
    here: the server-wide stream limit still holds."""

    streams_per_identity: int = 0
    symbols_per_stream: int = 0


@dataclass
class Quotas:
    """Open streams per identity. `open` admits or refuses; `close` gives the slot back."""

    limits: Limits = field(default_factory=Limits)
    _open: dict[str, int] = field(default_factory=dict)

    def open_streams(self, identity: str) -> int:
        return self._open.get(identity, 0)

    def open(self, grant: Grant, symbols: int) -> None:
        """Count a new stream of `grant` reading `symbols` symbols, or raise Refused."""
        limits = self.limits
        if grant is not ANONYMOUS:
            if limits.symbols_per_stream and symbols > limits.symbols_per_stream:
                raise Refused(
                    "symbol_quota",
                    f"{grant.identity}: {symbols} symbols in one stream; the limit is"
                    f" {limits.symbols_per_stream} per stream",
                )
            held = self._open.get(grant.identity, 0)
            if limits.streams_per_identity and held >= limits.streams_per_identity:
                raise Refused(
                    "stream_quota",
                    f"{grant.identity} holds {held} open streams; the limit is"
                    f" {limits.streams_per_identity} per identity",
                )
        self._open[grant.identity] = self._open.get(grant.identity, 0) + 1

    def close(self, grant: Grant) -> None:
        left = self._open.get(grant.identity, 0) - 1
        if left > 0:
            self._open[grant.identity] = left
        else:
            self._open.pop(grant.identity, None)
