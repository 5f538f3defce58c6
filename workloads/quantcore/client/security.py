"""How a client proves itself and checks the server: a CA, optionally a client certificate,
and a bearer token. Command-line options first, environment variables as fallback.

With a CA the channel is TLS, checked against it; without one it is plaintext, for a server
run with `--insecure`. A token is never sent over plaintext.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

ENV = {
    "ca": "QUANTCORE_CA",
    "cert": "QUANTCORE_CERT",
    "key": "QUANTCORE_KEY",
    "token": "QUANTCORE_TOKEN",
    "token_file": "QUANTCORE_TOKEN_FILE",
    "server_name": "QUANTCORE_SERVER_NAME",
}


class CredentialsError(ValueError):
    """The options do not make a usable client credential."""


@dataclass(frozen=True)
class ClientCredentials:
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    token: str | None = None
    # The name to check the server's certificate for, when the target is another name or an
    # address (e.g. a port-forward to 127.0.0.1 of a server whose certificate names its Service).
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise CredentialsError("a client certificate needs both --cert and --key")
        if self.ca is None and (self.cert is not None or self.server_name is not None):
            raise CredentialsError("--cert/--key and --server-name need TLS: give --ca")
        if self.ca is None and self.token is not None:
            raise CredentialsError(
                "a token would be sent in the clear over plaintext: give --ca for TLS"
            )

    @property
    def secure(self) -> bool:
        return self.ca is not None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel(self, target: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        """An aio channel to `target`: TLS with a CA, plaintext without."""
        opts = list(options)
        if self.ca is None:
            return grpc.aio.insecure_channel(target, options=opts)
        if self.server_name:
            opts.append(("grpc.ssl_target_name_override", self.server_name))
        return grpc.aio.secure_channel(target, self.channel_credentials(), options=opts)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        assert self.ca is not None
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.key.read_bytes() if self.key else None,
            certificate_chain=self.cert.read_bytes() if self.cert else None,
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "security", "credentials for a TLS server (environment variables as fallback)"
    )
    group.add_argument("--ca", type=Path, help=f"CA certificate to check the server (${ENV['ca']})")
    group.add_argument(
        "--cert", type=Path, help=f"client certificate for mutual TLS (${ENV['cert']})"
    )
    group.add_argument("--key", type=Path, help=f"its private key (${ENV['key']})")
    group.add_argument("--token", help=f"bearer token (${ENV['token']})")
    group.add_argument(
        "--token-file", type=Path, help=f"file holding the bearer token (${ENV['token_file']})"
    )
    group.add_argument(
        "--server-name",
        help=f"name the server certificate must carry, if not the target's (${ENV['server_name']})",
    )


def from_arguments(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> ClientCredentials:
    """The credentials the options give, each missing one from its environment variable."""
    env = os.environ if environ is None else environ

    def pick(name: str) -> str | None:
        value = getattr(args, name, None)
        return str(value) if value else env.get(ENV[name]) or None

    token = pick("token")
    token_file = pick("token_file")
    if token is None and token_file is not None:
        try:
            token = Path(token_file).read_text().strip() or None
        except OSError as exc:
            raise CredentialsError(f"cannot read the token file: {exc}") from exc
    paths = {name: (Path(v) if (v := pick(name)) else None) for name in ("ca", "cert", "key")}
    return ClientCredentials(
        ca=paths["ca"],
        cert=paths["cert"],
        key=paths["key"],
        token=token,
        server_name=pick("server_name"),
    )
