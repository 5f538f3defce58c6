"""The serving tier's security decisions, pure: the token file, authentication, permissions
and per-identity quotas."""

from __future__ import annotations

import grpc
import pytest

from quantcore.serve.access import (
    ANONYMOUS,
    REASONS,
    Limits,
    Quotas,
    Refused,
    authenticate,
    authorize,
    bearer_token,
)
from quantcore.serve.tokens import Grant, TokenFileError, parse_tokens

ALICE = "alice-0123456789abcdef"
BOB = "bob-0123456789abcdef00"


# ---- the token file -------------------------------------------------------------------------


def test_token_file_lines_comments_and_permissions() -> None:
    table = parse_tokens(
        f"""
        # identity token [permissions]
        alice {ALICE}
        bob   {BOB}  symbols=BTCUSDT,ETHUSDT methods=Subscribe   # trailing comment
        bob   bob-next-token-0123456789 symbols=BTCUSDT,ETHUSDT methods=Subscribe
        """
    )
    assert table.lookup(ALICE) == Grant("alice")
    bob = Grant("bob", frozenset({"BTCUSDT", "ETHUSDT"}), frozenset({"Subscribe"}))
    assert table.lookup(BOB) == bob
    assert table.lookup("bob-next-token-0123456789") == bob  # a token being rotated
    assert table.lookup("nobody-0123456789abcdef") is None
    assert table.identities == {"alice", "bob"}
    # Digests, not tokens, are kept.
    assert ALICE.encode() not in b"".join(table.by_digest)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("alice", "expected `identity token"),
        ("alice short", "at least 16"),
        ("al/ice 0123456789abcdef0", "not a simple name"),
        (f"alice {ALICE} colour=red", "unknown or repeated option"),
        (f"alice {ALICE} symbols=btcusdt", "symbols= must be"),
        (f"alice {ALICE} methods=Delete", "methods="),
        (f"alice {ALICE}\nbob {ALICE}", "line 2: this token is already given"),
        (f"alice {ALICE}\nalice {BOB} symbols=BTCUSDT", "line 2: alice has other permissions"),
    ],
)
def test_a_malformed_token_file_names_the_line_and_never_the_token(text: str, why: str) -> None:
    with pytest.raises(TokenFileError) as info:
        parse_tokens(text)
    assert why in str(info.value)
    assert ALICE not in str(info.value)
    assert BOB not in str(info.value)


# ---- authentication -------------------------------------------------------------------------


def test_bearer_token_from_metadata() -> None:
    assert bearer_token([("authorization", f"Bearer {ALICE}")]) == ALICE
    assert bearer_token([("Authorization", f"bearer  {ALICE} ".encode())]) == ALICE
    assert bearer_token([("x-other", "1")]) is None
    assert bearer_token([("authorization", f"Basic {ALICE}")]) is None
    assert bearer_token([("authorization", "Bearer ")]) is None


def test_authentication_refusals_and_the_anonymous_mode() -> None:
    table = parse_tokens(f"alice {ALICE}")
    assert authenticate(table, [("authorization", f"Bearer {ALICE}")]).identity == "alice"
    with pytest.raises(Refused) as missing:
        authenticate(table, [])
    assert (missing.value.reason, missing.value.code) == (
        "missing_token",
        grpc.StatusCode.UNAUTHENTICATED,
    )
    with pytest.raises(Refused) as bad:
        authenticate(table, [("authorization", f"Bearer {BOB}")])
    assert (bad.value.reason, bad.value.code) == ("bad_token", grpc.StatusCode.UNAUTHENTICATED)
    # No table: authentication is off, whatever the call carries.
    assert authenticate(None, []) is ANONYMOUS


# ---- authorization --------------------------------------------------------------------------


def test_authorization_narrows_or_refuses() -> None:
    both = frozenset({"BTCUSDT", "ETHUSDT"})
    unrestricted = Grant("alice")
    assert authorize(unrestricted, "GetSnapshot", None) is None
    assert authorize(unrestricted, "Subscribe", both) == both
    carol = Grant("carol", frozenset({"BTCUSDT"}), frozenset({"Subscribe", "ListSymbols"}))
    assert authorize(carol, "Subscribe", None) == {"BTCUSDT"}  # everything -> what is allowed
    assert authorize(carol, "Subscribe", frozenset({"BTCUSDT"})) == {"BTCUSDT"}
    with pytest.raises(Refused) as symbol:
        authorize(carol, "Subscribe", both)
    assert symbol.value.reason == "symbol_denied"
    assert symbol.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert "ETHUSDT" in symbol.value.message
    with pytest.raises(Refused) as method:
        authorize(carol, "GetSnapshot", None)
    assert method.value.reason == "method_denied"
    assert method.value.code == grpc.StatusCode.PERMISSION_DENIED


# ---- quotas ---------------------------------------------------------------------------------


def test_stream_quota_is_per_identity_and_slots_come_back() -> None:
    quotas = Quotas(Limits(streams_per_identity=2))
    alice, bob = Grant("alice"), Grant("bob")
    quotas.open(alice, 1)
    quotas.open(alice, 1)
    with pytest.raises(Refused) as info:
        quotas.open(alice, 1)
    assert info.value.reason == "stream_quota"
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.message == "alice holds 2 open streams; the limit is 2 per identity"
    quotas.open(bob, 1)  # not affected by alice
    quotas.close(alice)
    assert quotas.open_streams("alice") == 1
    quotas.open(alice, 1)
    for _ in range(2):
        quotas.close(alice)
    quotas.close(bob)
    assert quotas.open_streams("alice") == quotas.open_streams("bob") == 0


def test_symbol_quota_per_stream() -> None:
    quotas = Quotas(Limits(symbols_per_stream=3))
    quotas.open(Grant("alice"), 3)
    with pytest.raises(Refused) as info:
        quotas.open(Grant("alice"), 4)
    assert info.value.reason == "symbol_quota"
    assert info.value.message == "alice: 4 symbols in one stream; the limit is 3 per stream"
    assert quotas.open_streams("alice") == 1  # the refused stream took no slot


def test_anonymous_and_zero_limits_are_unlimited() -> None:
    quotas = Quotas(Limits(streams_per_identity=1, symbols_per_stream=1))
    for _ in range(5):
        quotas.open(ANONYMOUS, 100)  # authentication off: only the server-wide limit holds
    unlimited = Quotas(Limits())
    for _ in range(5):
        unlimited.open(Grant("alice"), 10_000)


def test_every_reason_has_a_status_code() -> None:
    assert set(REASONS.values()) <= {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
    with pytest.raises(AssertionError):
        Refused("not_a_reason", "")
