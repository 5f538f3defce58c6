"""The bearer-token table: which identity a token names and what that identity may do.

Pure (text in, table out). The file is a mounted Secret, one grant a line:

    # identity  token                             [permissions]
    alice       3f1c...(at least 16 characters)
    bot-eu      9a7b...  symbols=BTCUSDT,ETHUSDT methods=Subscribe,ListSymbols

`symbols=` narrows the symbols an identity may read, `methods=` the MarketData RPCs it may
call; each absent means all. An identity may have several lines (a token being rotated),
which must then grant the same permissions. The table keeps SHA-256 digests of the tokens,
not the tokens, and looks a presented token up by its digest, so a lookup takes the same
time whichever byte of a wrong token differs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

METHODS = ("Subscribe", "GetSnapshot", "ListSymbols", "History")
MIN_TOKEN_CHARS = 16
_IDENTITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: a header value
_SYMBOL = re.compile(r"^[A-Z0-9]{1,32}$")
_METHOD = re.compile("^(" + "|".join(METHODS) + ")$")


class TokenFileError(ValueError):
    """The token file is malformed; the message names the line (never the token)."""


@dataclass(frozen=True)
class Grant:
    """What one identity may do. None: no restriction."""

    identity: str
    symbols: frozenset[str] | None = None
    methods: frozenset[str] | None = None


@dataclass(frozen=True)
class TokenTable:
    by_digest: dict[bytes, Grant] = field(default_factory=dict)

    def lookup(self, token: str) -> Grant | None:
        return self.by_digest.get(digest(token))

    @property
    def identities(self) -> frozenset[str]:
        return frozenset(g.identity for g in self.by_digest.values())


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _names(value: str, pattern: re.Pattern[str], what: str, line: int) -> frozenset[str]:
    names = frozenset(v.strip() for v in value.split(",") if v.strip())
    bad = sorted(n for n in names if not pattern.match(n))
    if not names or bad:
        raise TokenFileError(f"line {line}: {what} must be a comma-separated list, got {bad!r}")
    return names


def parse_tokens(text: str) -> TokenTable:
    """The table a token file describes; TokenFileError names the first bad line."""
    table: dict[bytes, Grant] = {}
    granted: dict[str, tuple[int, Grant]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) < 2:
            raise TokenFileError(f"line {number}: expected `identity token [permissions]`")
        identity, token, *options = words
        if not _IDENTITY.match(identity):
            raise TokenFileError(f"line {number}: identity {identity!r} is not a simple name")
        if len(token) < MIN_TOKEN_CHARS or not _TOKEN.match(token):
            raise TokenFileError(
                f"line {number}: the token of {identity} must be at least {MIN_TOKEN_CHARS}"
                " printable characters without spaces"
            )
        symbols: frozenset[str] | None = None
        methods: frozenset[str] | None = None
        for option in options:
            key, _, value = option.partition("=")
            if key == "symbols" and symbols is None:
                symbols = _names(value, _SYMBOL, "symbols=", number)
            elif key == "methods" and methods is None:
                methods = _names(value, _METHOD, f"methods= (of {', '.join(METHODS)})", number)
            else:
                raise TokenFileError(
                    f"line {number}: unknown or repeated option {key!r} (symbols=, methods=)"
                )
        grant = Grant(identity, symbols, methods)
        key_digest = digest(token)
        if key_digest in table:
            raise TokenFileError(f"line {number}: this token is already given on another line")
        if identity in granted and granted[identity][1] != grant:
            raise TokenFileError(
                f"line {number}: {identity} has other permissions on line {granted[identity][0]}"
            )
        granted.setdefault(identity, (number, grant))
        table[key_digest] = grant
    return TokenTable(table)
