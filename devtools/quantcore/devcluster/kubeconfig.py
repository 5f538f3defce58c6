"""Kubeconfig files for the dev control plane: one for people and tests (admin), one per component."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from quantcore import ownership
from quantcore.devcluster.certs import KeyPair

CONTEXT = "quantcore-dev"
# The first line of every kubeconfig written here: what lets a later `up` replace it.
SIGNATURE = "# quantcore.devcluster kubeconfig, rewritten by every `up`"


def render(*, server: str, ca_cert: Path, user: str, client: KeyPair) -> dict[str, Any]:
    """A single-context kubeconfig with absolute file references (kubectl and helm read it as is)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {"server": server, "certificate-authority": str(ca_cert.resolve())},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(client.cert.resolve()),
                    "client-key": str(client.key.resolve()),
                },
            }
        ],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user}}],
        "current-context": CONTEXT,
        "preferences": {},
    }


def ours(path: Path) -> bool:
    """True when `path` is a kubeconfig `write` made (its first line is `SIGNATURE`)."""
    try:
        with path.open("rb") as file:
            return file.readline().rstrip(b"\n") == SIGNATURE.encode()
    except OSError:
        return False


REMEDY = "Choose another path with --kubeconfig."


def check_writable(path: Path) -> None:
    """Raises `ownership.NotOurs` now when `write(path, ...)` would refuse, so a command can
    say so before it starts anything."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ownership.FileBeside(path, replace=ours(path), remedy=REMEDY)


def write(path: Path, config: dict[str, Any]) -> Path:
    """Writes `config` to `path`, replacing only a kubeconfig written here before: a
    user's own (`--kubeconfig ~/.kube/config`) is refused with `ownership.NotOurs`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    target = ownership.FileBeside(path, replace=ours(path), remedy=REMEDY)
    try:
        target.temporary.write_text(SIGNATURE + "\n" + yaml.safe_dump(config, sort_keys=False))
        target.temporary.chmod(0o600)  # kubectl and helm warn about group/world-readable ones
        target.publish()
    finally:
        target.discard()
    return path
