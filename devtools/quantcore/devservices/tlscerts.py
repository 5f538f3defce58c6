"""A server's TLS files in cert-manager's layout, for Redis (local mode, tests and the test
ground's MarketFeeds), issued with quantcore.devservices.certs.

`issue(directory, names)` writes `ca.crt`, `tls.crt` and `tls.key` (the names of a cluster's
TLS Secret) for a server answering as `names` (DNS names or IP addresses). The CA's private
key is used once and never written: nobody can sign anything else with it later.
`kubernetes_secret` (and `python -m quantcore.devservices.tlscerts`) gives the same as a
`kubernetes.io/tls` Secret.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from quantcore.devservices import certs

VALIDITY = timedelta(days=365)


@dataclass(frozen=True)
class ServerTls:
    ca: Path  # ca.crt: what clients trust
    cert: Path  # tls.crt
    key: Path  # tls.key


def paths(directory: Path) -> ServerTls:
    return ServerTls(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")


def issue(
    directory: Path,
    names: Sequence[str],
    *,
    common_name: str = "quantcore",
    client: bool = False,
) -> ServerTls:
    """A fresh CA and a server certificate for `names`, written into `directory` (the key
    0600); the CA's key is dropped. `client`: the certificate may also prove its holder as a
    TLS client (a Kafka broker to its own controller)."""
    if not names:
        raise ValueError("a server certificate needs at least one name")
    ca = certs.new_ca(f"{common_name} local CA", valid_for=VALIDITY)
    server = certs.issue(
        ca, common_name, names=names, server=True, client=client, valid_for=VALIDITY
    )
    out = paths(directory)
    certs.write_pair(directory, server, out.cert.name, out.key.name)
    certs.write_public(out.ca, ca.cert_pem)
    return out


def kubernetes_secret(name: str, namespace: str, names: Sequence[str]) -> dict[str, Any]:
    """A `kubernetes.io/tls` Secret in cert-manager's layout (tls.crt, tls.key, ca.crt) for a
    server answering as `names`, from a fresh throwaway CA: what a MarketFeed's managed Redis
    reads (`<feed>-redis-tls`, for `<feed>-redis.<namespace>.svc`) where no cert-manager runs."""
    with tempfile.TemporaryDirectory(prefix="qc-tls-") as tmp:
        tls = issue(Path(tmp), names, common_name=names[0])
        data = {
            "tls.crt": tls.cert.read_bytes(),
            "tls.key": tls.key.read_bytes(),
            "ca.crt": tls.ca.read_bytes(),
        }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m quantcore.devservices.tlscerts",
        description="Print a TLS Secret (cert-manager layout) from a fresh throwaway CA, e.g."
        " for a MarketFeed's Redis on the test ground: | kubectl apply -f -",
    )
    parser.add_argument("--secret", required=True, help="the Secret's name, e.g. local-redis-tls")
    parser.add_argument("--namespace", required=True)
    parser.add_argument(
        "--name", action="append", required=True, help="a DNS name or IP the server answers as"
    )
    args = parser.parse_args(argv)
    print(json.dumps(kubernetes_secret(args.secret, args.namespace, args.name), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
