"""Kubeconfig files for the dev control plane: one for people and tests (admin), one per component."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from quantcore.devcluster.certs import KeyPair

CONTEXT = "quantcore-dev"


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


def write(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)  # kubectl and helm warn about group/world-readable kubeconfigs
    return path
