"""The server's secrets from files: TLS credentials that follow a rotated certificate, and the
bearer-token table, re-read when its file changes. Both are mounted Secrets in a cluster.

TLS uses grpc's dynamic server credentials: grpc asks `CertificateFiles.fetch` for the
configuration at each new handshake; it answers None (keep) unless the files changed, so a
renewed certificate reaches new connections without a restart while open connections (and
their streams) keep the one they were made with. A half-written pair (key and certificate
that do not match, as between two renames) is not taken: the current one stays until the
pair is whole.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from quantcore.serve import metrics
from quantcore.serve.served import FileSignature, signature
from quantcore.serve.tokens import TokenTable, parse_tokens

log = logging.getLogger(__name__)

# cert-manager's Secret layout (kubernetes.io/tls plus the issuer's CA).
DIR_CERT, DIR_KEY, DIR_CA = "tls.crt", "tls.key", "ca.crt"


class TlsConfigError(ValueError):
    """The TLS options or files cannot make a server credential."""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None  # verify client certificates against this CA
    require_client_cert: bool = False

    @classmethod
    def from_dir(cls, directory: Path, require_client_cert: bool = False) -> TlsFiles:
        """cert-manager's layout: tls.crt, tls.key and (for client certificates) ca.crt."""
        ca = directory / DIR_CA
        return cls(
            directory / DIR_CERT,
            directory / DIR_KEY,
            ca if require_client_cert else None,
            require_client_cert,
        )

    def __post_init__(self) -> None:
        if self.require_client_cert and self.client_ca is None:
            raise TlsConfigError("requiring client certificates needs a client CA to verify them")

    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())


@dataclass(frozen=True)
class LoadedPair:
    configuration: grpc.ServerCertificateConfiguration
    not_after_s: float


def load(files: TlsFiles) -> LoadedPair:
    """Read the files into a grpc configuration; TlsConfigError if they do not make one."""
    try:
        cert_pem = files.cert.read_bytes()
        key_pem = files.key.read_bytes()
        ca_pem = files.client_ca.read_bytes() if files.client_ca else None
    except OSError as exc:
        raise TlsConfigError(f"cannot read TLS files: {exc}") from exc
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # TypeError: encrypted key
        raise TlsConfigError(f"{files.cert} / {files.key}: not a PEM certificate and key") from exc
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise TlsConfigError(f"{files.key} is not the key of {files.cert}")
    configuration = grpc.ssl_server_certificate_configuration(
        [(key_pem, cert_pem)], root_certificates=ca_pem
    )
    return LoadedPair(configuration, cert.not_valid_after_utc.timestamp())


class CertificateFiles:
    """The dynamic credential's source: the current configuration, re-read on change."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        first = load(files)  # a bad pair at start fails the start
        self._seen = self._signatures()
        self.reloads = 0
        self.initial = first.configuration
        metrics.TLS_CERT_EXPIRY.set(first.not_after_s)

    def _signatures(self) -> tuple[FileSignature | None, ...]:
        # A Secret volume swaps a symlink to a new directory: the inode changes.
        return tuple(signature(p) for p in self.files.paths())

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by grpc before each handshake: a new configuration when the files changed."""
        current = self._signatures()
        if current == self._seen:
            return None
        try:
            pair = load(self.files)
        except TlsConfigError as exc:
            # Keep serving the current pair; the next handshake looks again.
            log.warning("TLS files changed but are not usable yet: %s", exc)
            metrics.TLS_RELOADS.labels("invalid").inc()
            return None
        self._seen = current
        self.reloads += 1
        metrics.TLS_RELOADS.labels("loaded").inc()
        metrics.TLS_CERT_EXPIRY.set(pair.not_after_s)
        log.info("TLS certificate reloaded from %s", self.files.cert)
        return pair.configuration

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.initial,
            self.fetch,
            require_client_authentication=self.files.require_client_cert,
        )


def read_tokens(path: Path) -> TokenTable:
    return parse_tokens(path.read_text())


async def watch_tokens(
    path: Path,
    on_table: Callable[[TokenTable], None],
    poll_s: float = 0.5,
    seen: FileSignature | None = None,
) -> None:
    """Call `on_table` with the token file's table after every change from `seen` (the
    signature of the version already read), for ever. A missing or malformed file keeps the
    current table (and is counted); the next change is read again."""
    while True:
        await asyncio.sleep(poll_s)
        current = signature(path)
        if current is None or current == seen:
            continue
        seen = current
        try:
            table = read_tokens(path)
        except (OSError, ValueError) as exc:
            log.error("token file %s unusable, keeping the current tokens: %s", path, exc)
            metrics.TOKEN_RELOADS.labels("invalid").inc()
            continue
        metrics.TOKEN_RELOADS.labels("loaded").inc()
        log.info("token file reloaded: %d identities", len(table.identities))
        on_table(table)
