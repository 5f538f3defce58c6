"""The Redis ACL users follow the code: the commands each user may run are the ones its code
calls, the key and channel patterns are the signal store's layout, and the rendered aclfile
holds hashes only."""

from __future__ import annotations

import ast
import hashlib
import inspect
import re
from pathlib import Path

import pytest

from quantcore import redisacl, signalstore
from quantcore.redisacl import ADMIN, RELAY, ROLES, SERVE

ROOT = Path(__file__).resolve().parents[2]
# Receivers of redis-py calls in the code (a client, a pipeline, a pub/sub object).
_RECEIVER = re.compile(r"(^|\.)(_?redis|_?client|pipe|pubsub)$")
# redis-py method name -> the ACL's command name.
_SUBCOMMANDS = {"script_load": "script|load", "script_exists": "script|exists"}


def _redis_calls(source: str) -> set[str]:
    calls: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = ast.unparse(node.func.value)
            if _RECEIVER.search(receiver):
                calls.add(node.func.attr)
    not_commands = {"pipeline", "pubsub", "execute", "close", "aclose", "get_message",
                    "register_script", "from_url"}  # fmt: skip
    return {_SUBCOMMANDS.get(c, c) for c in calls - not_commands}


def _script_calls() -> set[str]:
    return {c.lower() for c in re.findall(r"redis\.call\('(\w+)'", signalstore.CAS_SCRIPT)}


def test_the_relay_may_run_what_the_signal_writer_and_its_script_run() -> None:
    writer = _redis_calls(inspect.getsource(signalstore.SignalWriter))
    # The compare-and-set Script object runs EVALSHA (and SCRIPT LOAD when Redis lost it).
    used = writer | {"evalsha"} | _script_calls()
    assert used == {"evalsha", "script|load", "sadd", "hget", "hset", "publish", "exists", "set"}
    assert set(ROLES[RELAY].commands) == used | {"ping"}


def test_the_serving_user_may_run_what_serving_calls_and_nothing_that_writes() -> None:
    used: set[str] = set()
    for path in sorted((ROOT / "workloads/quantcore/serve").glob("*.py")):
        used |= _redis_calls(path.read_text())
    assert used == {"smembers", "hmget", "psubscribe"}
    assert set(ROLES[SERVE].commands) == used | {"punsubscribe", "ping"}
    assert all(key.startswith("%R~") for key in ROLES[SERVE].keys), "serving only reads"


def test_patterns_are_the_signal_store_layout() -> None:
    assert signalstore.state_key("*") == redisacl.SIGNAL_KEYS
    assert signalstore.state_key("BTCUSDT").startswith(redisacl.SIGNAL_KEYS[:-1])
    assert redisacl.UPDATE_CHANNELS == signalstore.channel("*") == signalstore.UPDATES_PATTERN
    assert set(ROLES[RELAY].keys) == {
        f"~{signalstore.state_key('*')}",
        f"~{signalstore.SYMBOLS_KEY}",
        f"~{signalstore.MALFORMED_KEY}",
        f"~{signalstore.relay_marker('*')}",
    }
    assert ROLES[RELAY].channels == (signalstore.channel("*"),)
    # PSUBSCRIBE is checked literally: serving's pattern is named exactly.
    assert ROLES[SERVE].channels == (signalstore.UPDATES_PATTERN,)


def test_users_acl_turns_default_off_and_stores_only_hashes() -> None:
    passwords = {RELAY: "relay-secret", SERVE: "serve-secret"}
    text = redisacl.users_acl(passwords)
    lines = text.splitlines()
    assert lines[0] == "user default off resetpass resetkeys resetchannels -@all"
    assert [line.split()[1] for line in lines] == ["default", RELAY, SERVE]
    for user, password in passwords.items():
        assert password not in text
        digest = hashlib.sha256(password.encode()).hexdigest()
        assert f"user {user} on resetpass #{digest} resetkeys resetchannels -@all " in text
    assert ADMIN not in text  # only the users asked for exist


def test_every_rule_line_resets_before_it_allows() -> None:
    for role in ROLES.values():
        parts = role.rules().split()
        assert parts[:3] == ["resetkeys", "resetchannels", "-@all"]


def test_access_strings_and_setuser_args_match_the_aclfile() -> None:
    assert redisacl.access_string(SERVE) == f"on {ROLES[SERVE].rules()}"
    args = redisacl.setuser_args(RELAY, "pw")
    assert args[:3] == [RELAY, "on", "resetpass"]
    assert " ".join(["user", *args]) == redisacl.user_line(RELAY, "pw")


def test_unknown_users_and_empty_passwords_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown Redis users"):
        redisacl.users_acl({"root": "x"})
    with pytest.raises(ValueError, match="needs a password"):
        redisacl.users_acl({RELAY: ""})


def test_the_init_containers_aclfile_comes_from_the_secrets_passwords(tmp_path: Path) -> None:
    import argparse
    import stat

    from quantcore.operator import aclfile

    env = {redisacl.password_env(RELAY): "r", redisacl.password_env(SERVE): "s"}
    assert aclfile.passwords_from(env) == {RELAY: "r", SERVE: "s"}
    with pytest.raises(ValueError, match="QUANTCORE_REDIS_SERVE_PASSWORD"):
        aclfile.passwords_from({redisacl.password_env(RELAY): "r"})
    out = tmp_path / "acl" / "users.acl"
    aclfile.write(out, redisacl.users_acl({RELAY: "r", SERVE: "s"}))
    assert out.read_text() == redisacl.users_acl({RELAY: "r", SERVE: "s"})
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    parser = argparse.ArgumentParser()
    aclfile.add_arguments(parser)
    assert parser.parse_args(["--out", str(out)]).out == out
