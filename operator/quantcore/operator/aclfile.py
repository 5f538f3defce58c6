"""`quantcore redis-acl`: write the managed Redis's aclfile from the passwords in its Secret.

The init container of every Redis pod the operator plans runs it (with the quantcore image),
reading each pipeline user's password from the environment (env from the credentials Secret)
and writing quantcore.redisacl's rules with password hashes into a memory volume Redis reads.
The rules come from the code of the image, not from the Secret: a new release's rules reach
an existing MarketFeed on its next Redis start, while its passwords stay.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from quantcore import redisacl


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="the aclfile to write (0600)")


def passwords_from(environ: Mapping[str, str]) -> dict[str, str]:
    """Each pipeline user's password from its variable; a missing one is an error."""
    missing = [
        redisacl.password_env(u)
        for u in redisacl.PIPELINE_USERS
        if not environ.get(redisacl.password_env(u))
    ]
    if missing:
        raise ValueError(f"no password in {', '.join(missing)}")
    return {user: environ[redisacl.password_env(user)] for user in redisacl.PIPELINE_USERS}


def write(path: Path, text: str) -> None:
    """Write beside `path` and rename: Redis never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    partial.replace(path)


def run(args: argparse.Namespace) -> int:
    try:
        passwords = passwords_from(os.environ)
    except ValueError as exc:
        print(f"quantcore redis-acl: {exc}", file=sys.stderr)
        return 2
    write(args.out, redisacl.users_acl(passwords))
    print(f"quantcore redis-acl: wrote users {', '.join(sorted(passwords))} to {args.out}")
    return 0
