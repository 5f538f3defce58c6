"""Redis credentials travel beside the address, never in a printed URL."""

from __future__ import annotations

import argparse

from quantcore import redisauth
from quantcore.redisauth import RedisAuth


def test_credentials_come_from_the_environment_and_go_back_to_it() -> None:
    env = {
        redisauth.USERNAME_ENV: "serve",
        redisauth.PASSWORD_ENV: "s3cret",
        redisauth.CA_FILE_ENV: "/ca.crt",
        "OTHER": "x",
    }
    auth = RedisAuth.from_env(env)
    assert auth == RedisAuth("serve", "s3cret", "/ca.crt")
    assert auth.env() == {k: v for k, v in env.items() if k != "OTHER"}
    assert auth.client_kwargs() == {
        "username": "serve",
        "password": "s3cret",
        "ssl_ca_certs": "/ca.crt",
    }
    assert "s3cret" not in repr(auth)


def test_no_credentials_mean_no_arguments() -> None:
    assert RedisAuth.from_env({}) == RedisAuth()
    assert RedisAuth().client_kwargs() == {}
    assert RedisAuth().env() == {}


def test_flags_win_over_the_environment_but_the_password_is_env_only() -> None:
    parser = argparse.ArgumentParser()
    redisauth.add_arguments(parser)
    args = parser.parse_args(["--redis-username", "relay", "--redis-ca-file", "/x.pem"])
    env = {redisauth.USERNAME_ENV: "serve", redisauth.PASSWORD_ENV: "pw"}
    assert redisauth.from_args(args, env) == RedisAuth("relay", "pw", "/x.pem")
    options = {o for action in parser._actions for o in action.option_strings}
    assert not any("password" in option for option in options)


def test_redacted_hides_only_the_password() -> None:
    assert redisauth.redacted("rediss://relay:pw@h:6379/0") == "rediss://relay:***@h:6379/0"
    assert redisauth.redacted("rediss://:pw@h/0?x=1") == "rediss://:***@h/0?x=1"
    assert redisauth.redacted("redis://h:6379/0") == "redis://h:6379/0"
    assert redisauth.is_tls("rediss://h:1/0")
    assert not redisauth.is_tls("redis://h:1/0")
