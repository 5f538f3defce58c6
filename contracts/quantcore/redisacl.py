"""Who may do what in Redis: the ACL users of the signal store, derived from its layout.

Two users run the pipeline and each may do only what its code does:

- `relay` (the stream job's relay, quantcore.signalstore.SignalWriter): EVALSHA of the
  compare-and-set script, SCRIPT LOAD when Redis lost it, SADD of refused input, and the
  commands the script itself runs (HGET, HSET, SADD, PUBLISH: a script runs as its caller),
  on the signal hashes, the symbol set, the malformed set and the update channels;
- `serve` (quantcore.serve): SMEMBERS and HMGET, read-only, on the signal hashes and the
  symbol set, and PSUBSCRIBE to the update channels' pattern.

Both may PING (a health check).
`default` is switched off, so a client that does not AUTH can do nothing. `admin` (every
command) exists only where the project's own tooling needs it: the dev services' tests and
benchmarks; the cluster and the one-machine pipeline leave it out.

The key and channel patterns are built from quantcore.signalstore's own functions, so the
rules follow the layout; `users_acl` renders a redis `aclfile` with only password hashes,
`access_string` the rules of one user for ACL SETUSER or an ElastiCache user.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from quantcore import signalstore

RELAY = "relay"
SERVE = "serve"
ADMIN = "admin"
# The users of the pipeline itself; ADMIN is tooling only.
PIPELINE_USERS = (RELAY, SERVE)

# PING is every client's health check (start-up probes, redis-py's health_check_interval)
# and touches no data. redis-py's CLIENT SETINFO on connect is left out: Redis 7.0 does not
# know it and redis-py ignores its refusal.
_CONNECTION = ("ping",)


@dataclass(frozen=True)
class Role:
    """One user's rules: commands, key patterns (with their access), channel patterns."""

    name: str
    commands: tuple[str, ...]
    keys: tuple[str, ...]  # ACL key selectors: "~pattern" (read and write) or "%R~pattern"
    channels: tuple[str, ...]

    def rules(self) -> str:
        """The user's rules without its state or password: reset first, then allow."""
        parts = ["resetkeys", "resetchannels", "-@all"]
        parts += [f"+{command}" for command in self.commands]
        parts += list(self.keys)
        parts += [f"&{channel}" for channel in self.channels]
        return " ".join(parts)


SIGNAL_KEYS = signalstore.state_key("*")
UPDATE_CHANNELS = signalstore.channel("*")

ROLES: dict[str, Role] = {
    RELAY: Role(
        RELAY,
        commands=(
            "evalsha",
            "script|load",
            "sadd",
            # Run by the compare-and-set script (signalstore.CAS_SCRIPT) as the relay.
            "hget",
            "hset",
            "publish",
            # Its marker: is the state there, or must it be rebuilt (quantcore.stream.rebuild)?
            "exists",
            "set",
            *_CONNECTION,
        ),
        keys=(
            f"~{SIGNAL_KEYS}",
            f"~{signalstore.SYMBOLS_KEY}",
            f"~{signalstore.MALFORMED_KEY}",
            f"~{signalstore.RELAY_MARKERS}",
        ),
        channels=(UPDATE_CHANNELS,),
    ),
    SERVE: Role(
        SERVE,
        commands=("smembers", "hmget", "psubscribe", "punsubscribe", *_CONNECTION),
        keys=(f"%R~{SIGNAL_KEYS}", f"%R~{signalstore.SYMBOLS_KEY}"),
        # PSUBSCRIBE is allowed only for a pattern named here literally.
        channels=(signalstore.UPDATES_PATTERN,),
    ),
    ADMIN: Role(ADMIN, commands=("@all",), keys=("~*",), channels=("*",)),
}

# Nobody may use the connection before AUTH: the default user is off and can do nothing.
DEFAULT_USER_LINE = "user default off resetpass resetkeys resetchannels -@all"


def secret_key(user: str) -> str:
    """The key holding `user`'s password in a credentials Secret (`relay-password`)."""
    return f"{user}-password"


def password_env(user: str) -> str:
    """The variable an aclfile writer reads `user`'s password from."""
    return f"QUANTCORE_REDIS_{user.upper()}_PASSWORD"


def password_hash(password: str) -> str:
    """Redis's `#<hash>` form: the SHA-256 of the password, hex."""
    return hashlib.sha256(password.encode()).hexdigest()


def access_string(user: str) -> str:
    """`on` plus the user's rules (ACL SETUSER / an ElastiCache user's access string)."""
    return f"on {ROLES[user].rules()}"


def user_line(user: str, password: str) -> str:
    """One aclfile line: the user on, its password as a hash only, its rules."""
    if not password:
        raise ValueError(f"Redis user {user!r} needs a password")
    return f"user {user} on resetpass #{password_hash(password)} {ROLES[user].rules()}"


def users_acl(passwords: Mapping[str, str]) -> str:
    """A redis aclfile: `default` off, then each named user with its password's hash.

    Users absent from `passwords` do not exist (aclfile replaces every user)."""
    unknown = sorted(set(passwords) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown Redis users {unknown}; known: {sorted(ROLES)}")
    lines = [DEFAULT_USER_LINE]
    lines += [user_line(user, passwords[user]) for user in sorted(passwords)]
    return "".join(line + "\n" for line in lines)


def setuser_args(user: str, password: str) -> list[str]:
    """The arguments of `ACL SETUSER` that make `user` exactly what users_acl makes it."""
    return user_line(user, password).split()[1:]
