"""A throwaway redis-server (Debian's binary) on a free loopback port, without persistence.

Secure by default, as in a cluster: TLS only (`port 0`, `tls-port`; a certificate for
127.0.0.1 from a CA made for this server, `quantcore.devservices.tlscerts`) and ACL users
(`quantcore.redisacl`) with passwords generated into the workdir, the `default` user off.
`RedisServer(workdir).start()` returns once an authenticated PING answers; `address` is the
`rediss://127.0.0.1:PORT/0` URL without credentials, `auth(user)` one user's credentials.
`insecure=True` gives the plain, open server of old (`redis://`, no AUTH).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from quantcore import redisacl
from quantcore.devservices import tlscerts
from quantcore.devservices.ports import LOOPBACK, free_port, is_listening
from quantcore.devservices.process import ManagedService, ServiceError
from quantcore.redisauth import RedisAuth

# Every user a test or benchmark may need; `quantcore up` creates the pipeline's alone.
ALL_USERS = (*redisacl.PIPELINE_USERS, redisacl.ADMIN)


@dataclass(frozen=True)
class RedisSecurity:
    """The TLS files and the user passwords of one secured redis-server."""

    tls: tlscerts.ServerTls
    passwords: dict[str, str] = field(repr=False)

    def auth(self, user: str) -> RedisAuth:
        if user not in self.passwords:
            raise KeyError(f"this Redis has no user {user!r}; it has {sorted(self.passwords)}")
        return RedisAuth(username=user, password=self.passwords[user], ca_file=str(self.tls.ca))


def create_security(directory: Path, users: Sequence[str]) -> RedisSecurity:
    """A CA and server certificate for 127.0.0.1, and a fresh password per user, each kept
    in `directory/passwords/<user>` (mode 0600) for whoever runs the machine."""
    tls = tlscerts.issue(directory / "tls", [LOOPBACK, "localhost"], common_name="redis")
    store = directory / "passwords"
    store.mkdir(parents=True, exist_ok=True, mode=0o700)
    passwords: dict[str, str] = {}
    for user in users:
        passwords[user] = secrets.token_urlsafe(32)
        fd = os.open(store / user, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(passwords[user] + "\n")
    return RedisSecurity(tls, passwords)


def credential_url(address: str, auth: RedisAuth) -> str:
    """`address` (`rediss://HOST:PORT/DB`) carrying `auth`'s user, password and CA (redis-py
    reads `ssl_ca_certs` from the query): one string for a client in the same process, such
    as a test's or a benchmark's. Never print it."""
    parts = urlsplit(address)
    if not auth.username or not auth.password:
        return address
    netloc = f"{quote(auth.username, safe='')}:{quote(auth.password, safe='')}@{parts.netloc}"
    query = f"ssl_ca_certs={quote(auth.ca_file, safe='/')}" if auth.ca_file else ""
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def stored_auth(workdir: Path, user: str) -> RedisAuth:
    """`user`'s credentials as a RedisServer in `workdir` keeps them (`quantcore up --dir D`:
    D/redis), for tooling that attaches to a server it did not start."""
    password = (workdir / "passwords" / user).read_text().strip()
    return RedisAuth(
        username=user, password=password, ca_file=str(tlscerts.paths(workdir / "tls").ca)
    )


def redis_config(
    port: int,
    workdir: Path,
    extra: dict[str, str] | None = None,
    *,
    security: RedisSecurity | None = None,
    aclfile: Path | None = None,
) -> str:
    """Loopback only, no RDB/AOF files: test data must never outlive the server. With
    `security`: TLS on `port` and no plaintext port; the users of `aclfile`."""
    settings = {
        "bind": LOOPBACK,
        "port": str(port),
        "protected-mode": "yes",
        "daemonize": "no",
        "dir": str(workdir),
        "save": '""',
        "appendonly": "no",
        "logfile": '""',  # stdout, which the process log captures
        "databases": "16",
        "maxmemory": "256mb",
    }
    if security is not None:
        if aclfile is None:
            raise ValueError("a secured Redis needs its aclfile")
        settings |= {
            "port": "0",
            "tls-port": str(port),
            "tls-cert-file": str(security.tls.cert),
            "tls-key-file": str(security.tls.key),
            "tls-ca-cert-file": str(security.tls.ca),
            # Clients prove who they are with their ACL user's password (over TLS); the
            # certificate proves the server to them.
            "tls-auth-clients": "no",
            "aclfile": str(aclfile),
        }
    settings.update(extra or {})
    return "".join(f"{key} {value}\n" for key, value in settings.items())


def redis_answers(url: str, auth: RedisAuth | None = None) -> bool:
    """True when PING gets PONG (as `auth`'s user)."""
    import redis

    kwargs = auth.client_kwargs() if auth is not None else {}
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1, **kwargs)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class RedisServer(ManagedService):
    """One redis-server living in `workdir`; stop() ends it. Its users and certificate are
    made on the first start and kept across restarts, so clients reconnect as before."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        die_with_parent: bool = False,
        start_timeout: float = 30.0,
        extra_config: dict[str, str] | None = None,
        insecure: bool = False,
        users: Sequence[str] = ALL_USERS,
    ) -> None:
        super().__init__(
            workdir, "redis.log", die_with_parent=die_with_parent, start_timeout=start_timeout
        )
        self.port = port or free_port()
        self.extra_config = extra_config or {}
        self.insecure = insecure
        self.users = tuple(users)
        self.security: RedisSecurity | None = None

    @property
    def marker(self) -> str:
        """Text the server's command line always contains: redis-server retitles itself to
        `redis-server 127.0.0.1:PORT` (its TLS port when it has no other), dropping the
        config path."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def address(self) -> str:
        """The server's URL without credentials: what a process is told besides its user."""
        scheme = "redis" if self.insecure else "rediss"
        return f"{scheme}://{LOOPBACK}:{self.port}/0"

    def auth(self, user: str) -> RedisAuth:
        """`user`'s credentials and the CA (nothing for an insecure server)."""
        if self.insecure:
            return RedisAuth()
        if self.security is None:
            raise ServiceError("Redis was not started: it has no users yet")
        return self.security.auth(user)

    def url_for(self, user: str) -> str:
        """One URL that carries `user`'s credentials and the CA (redis-py reads the query):
        for clients in the same process, such as tests. Never print it."""
        return credential_url(self.address, self.auth(user))

    @property
    def url(self) -> str:
        """The most privileged URL this server has: admin's when it exists (tests and
        benchmarks set up and inspect Redis with it), else the address."""
        if not self.insecure and redisacl.ADMIN in self.users:
            return self.url_for(redisacl.ADMIN)
        return self.address

    def _probe_auth(self) -> RedisAuth | None:
        if self.insecure:
            return None
        # Every user may PING: the first one proves TLS, the ACL file and AUTH all work.
        user = redisacl.ADMIN if redisacl.ADMIN in self.users else self.users[0]
        return self.auth(user)

    def start(self) -> str:
        """Start redis-server and wait for PING; returns `url`."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server is not installed (make setup-services installs it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "redis.conf"
        aclfile = self.workdir / "users.acl"
        if not self.insecure:
            if not self.users:
                raise ServiceError("a secured Redis needs at least one user")
            if self.security is None:
                self.security = create_security(self.workdir, self.users)
            fd = os.open(aclfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(redisacl.users_acl(self.security.passwords))
        config.write_text(
            redis_config(
                self.port,
                self.workdir,
                self.extra_config,
                security=self.security if not self.insecure else None,
                aclfile=aclfile,
            )
        )
        probe = self._probe_auth()
        self._launch(
            "redis",
            [binary, str(config)],
            lambda: is_listening(self.port) and redis_answers(self.address, probe),
            "answering PING",
        )
        return self.url
