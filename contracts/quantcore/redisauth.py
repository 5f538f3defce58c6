"""How a process proves who it is to Redis: ACL user, password and the CA of Redis's TLS.

Written once for every reader (`quantcore stream`'s relay, `quantcore serve`) and writer (the
operator's pod specs, local mode, the test harness). The address stays a URL
(`rediss://HOST:PORT/DB` for TLS); the credentials travel beside it, in the environment, so
no command line, pod spec argument or log line carries a password:

    QUANTCORE_REDIS_USERNAME   the ACL user (quantcore.redisacl: relay or serve)
    QUANTCORE_REDIS_PASSWORD   its password (in a cluster: env from a Secret)
    QUANTCORE_REDIS_CA_FILE    PEM file of the CA that signed Redis's certificate

A URL may carry `user:password@` itself (redis-py reads it); `redacted` is what to print.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

USERNAME_ENV = "QUANTCORE_REDIS_USERNAME"
PASSWORD_ENV = "QUANTCORE_REDIS_PASSWORD"
CA_FILE_ENV = "QUANTCORE_REDIS_CA_FILE"


@dataclass(frozen=True)
class RedisAuth:
    """Credentials and trust for one Redis client; empty: no AUTH, the system's CAs."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RedisAuth:
        env = os.environ if environ is None else environ
        return cls(
            username=env.get(USERNAME_ENV) or None,
            password=env.get(PASSWORD_ENV) or None,
            ca_file=env.get(CA_FILE_ENV) or None,
        )

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for redis-py's `from_url` / connection pools. The CA only
        matters for a `rediss://` URL; the certificate's name must match the URL's host."""
        kwargs: dict[str, Any] = {}
        if self.username:
            kwargs["username"] = self.username
        if self.password:
            kwargs["password"] = self.password
        if self.ca_file:
            kwargs["ssl_ca_certs"] = self.ca_file
        return kwargs

    def env(self) -> dict[str, str]:
        """The environment that hands these credentials to a child process."""
        pairs = {
            USERNAME_ENV: self.username,
            PASSWORD_ENV: self.password,
            CA_FILE_ENV: self.ca_file,
        }
        return {key: value for key, value in pairs.items() if value}


def redacted(url: str) -> str:
    """`url` with any password in it replaced by `***`: safe for logs and READY lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def is_tls(url: str) -> bool:
    return urlsplit(url).scheme == "rediss"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--redis-username` and `--redis-ca-file` (each defaulting to its variable); the
    password is read from QUANTCORE_REDIS_PASSWORD only, never from the command line."""
    parser.add_argument(
        "--redis-username",
        default=None,
        help=f"Redis ACL user (default: ${USERNAME_ENV}; password from ${PASSWORD_ENV})",
    )
    parser.add_argument(
        "--redis-ca-file",
        default=None,
        help=f"CA certificate (PEM) that signed Redis's TLS certificate (default: ${CA_FILE_ENV})",
    )


def from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> RedisAuth:
    """The credentials `add_arguments`' options and the environment give."""
    auth = RedisAuth.from_env(environ)
    return RedisAuth(
        username=args.redis_username or auth.username,
        password=auth.password,
        ca_file=args.redis_ca_file or auth.ca_file,
    )
