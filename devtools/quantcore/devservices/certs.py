"""Certificates and tokens for serving over TLS where no cert-manager issues them: a private CA,
server and client certificates signed by it, and bearer tokens.

`quantcore up` keeps one set under its state directory (`local_credentials`, reused while
still valid); tests make their own, including expired and foreign ones. Issuing is pure
(inputs and a clock in, PEM bytes out); only the `write`/`local_credentials` functions touch
files. Keys are ECDSA P-256: quick to make, and every TLS stack grpc uses speaks it.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCAL_SERVER_NAMES = ("localhost", "127.0.0.1")
LOCAL_IDENTITY = "local"
# A set is reissued when any certificate in it would expire within this margin.
RENEW_MARGIN = timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "QuantCore"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def new_ca(
    common_name: str = "QuantCore local CA",
    *,
    not_before: datetime | None = None,
    valid_for: timedelta = timedelta(days=365),
) -> Issued:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    start = not_before or datetime.now(UTC) - timedelta(minutes=5)
    key = _key()
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem(key))


def issue(
    ca: Issued,
    common_name: str,
    *,
    names: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    not_before: datetime | None = None,
    valid_for: timedelta = timedelta(days=90),
) -> Issued:
    """An end-entity certificate signed by `ca`. `names` become SANs (IP addresses as such);
    `server`/`client` set the extended key usages TLS checks."""
    start = not_before or datetime.now(UTC) - timedelta(minutes=5)
    ca_cert = ca.certificate
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = _key()
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + valid_for)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if names:
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem(key))


def expired(
    ca: Issued,
    common_name: str,
    *,
    names: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
) -> Issued:
    """A certificate that expired a day ago (valid for one day before that): for tests."""
    return issue(
        ca,
        common_name,
        names=names,
        server=server,
        client=client,
        not_before=datetime.now(UTC) - timedelta(days=2),
        valid_for=timedelta(days=1),
    )


def new_token() -> str:
    """A bearer token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def valid_until(cert_pem: bytes) -> datetime:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def signed_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    try:
        x509.load_pem_x509_certificate(cert_pem).verify_directly_issued_by(
            x509.load_pem_x509_certificate(ca_pem)
        )
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# ---- files ----------------------------------------------------------------------------------


def write_private(path: Path, data: bytes) -> None:
    """Write a key or token readable by its owner only, replacing the file atomically."""
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(partial, path)


def write_public(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def write_pair(directory: Path, issued: Issued, cert_name: str, key_name: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_private(directory / key_name, issued.key_pem)
    write_public(directory / cert_name, issued.cert_pem)


@dataclass(frozen=True)
class LocalCredentials:
    """One machine's set, in one directory: the server reads it with `--tls-dir` (tls.crt,
    tls.key and ca.crt, cert-manager's names) and `--tokens`; clients take ca.crt,
    client.crt/client.key and client.token."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "tls.key"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"

    @property
    def client_token(self) -> Path:
        return self.directory / "client.token"

    @property
    def tokens(self) -> Path:
        """The server's token file (quantcore.serve.tokens format)."""
        return self.directory / "tokens"

    def files(self) -> tuple[Path, ...]:
        return (
            self.ca,
            self.ca_key,
            self.server_cert,
            self.server_key,
            self.client_cert,
            self.client_key,
            self.client_token,
            self.tokens,
        )


def _reusable(creds: LocalCredentials, now: datetime, names: Sequence[str]) -> bool:
    if not all(p.is_file() for p in creds.files()):
        return False
    try:
        ca_pem = creds.ca.read_bytes()
        for cert in (creds.ca, creds.server_cert, creds.client_cert):
            pem = cert.read_bytes()
            if valid_until(pem) - now < RENEW_MARGIN or not signed_by(pem, ca_pem):
                return False
        sans = x509.load_pem_x509_certificate(creds.server_cert.read_bytes()).extensions
        alt = sans.get_extension_for_class(x509.SubjectAlternativeName).value
        served = {str(n) for n in alt.get_values_for_type(x509.DNSName)} | {
            str(ip) for ip in alt.get_values_for_type(x509.IPAddress)
        }
        token = creds.client_token.read_text().strip()
        listed = creds.tokens.read_text().split()
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    return served >= set(names) and token in listed


def local_credentials(
    directory: Path, now: datetime | None = None, names: Sequence[str] = LOCAL_SERVER_NAMES
) -> tuple[LocalCredentials, bool]:
    """The set in `directory` (server certificate for `names`), made afresh unless the one
    there is whole, names them and is valid for at least RENEW_MARGIN more. Returns it and
    whether it was reused."""
    creds = LocalCredentials(directory)
    if _reusable(creds, now or datetime.now(UTC), names):
        return creds, True
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca = new_ca()
    server = issue(ca, "quantcore serve", names=names, server=True)
    client = issue(ca, LOCAL_IDENTITY, client=True)
    token = new_token()
    write_pair(directory, ca, "ca.crt", "ca.key")
    write_pair(directory, server, "tls.crt", "tls.key")
    write_pair(directory, client, "client.crt", "client.key")
    write_private(creds.client_token, f"{token}\n".encode())
    write_private(creds.tokens, f"# identity token\n{LOCAL_IDENTITY} {token}\n".encode())
    return creds, False


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m quantcore.devservices.certs DIR --name HOST...`: a set for a server reached
    by those names (e.g. a cluster Service), to load into Secrets."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument(
        "--name",
        action="append",
        default=None,
        help=f"a name the server certificate carries (repeat; default {' '.join(LOCAL_SERVER_NAMES)})",
    )
    args = parser.parse_args(argv)
    creds, reused = local_credentials(args.directory, names=args.name or LOCAL_SERVER_NAMES)
    print(f"{'reused' if reused else 'made'}: {' '.join(str(p) for p in creds.files())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
