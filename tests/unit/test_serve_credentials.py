"""Certificates (quantcore.devservices.certs), the server's reading of TLS files and its
reload rule, `quantcore serve`'s TLS options, and the clients' credentials."""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from quantcore.client import security
from quantcore.client.security import ClientCredentials, CredentialsError
from quantcore.devservices import certs
from quantcore.serve import command
from quantcore.serve.credentials import CertificateFiles, TlsConfigError, TlsFiles, load


def server_dir(tmp_path: Path) -> tuple[certs.Issued, Path]:
    ca = certs.new_ca()
    pair = certs.issue(ca, "serve", names=("localhost", "127.0.0.1"), server=True)
    certs.write_pair(tmp_path / "tls", pair, "tls.crt", "tls.key")
    certs.write_public(tmp_path / "tls" / "ca.crt", ca.cert_pem)
    return ca, tmp_path / "tls"


# ---- certificates ---------------------------------------------------------------------------


def test_issued_certificates_carry_names_usages_and_the_issuer() -> None:
    ca = certs.new_ca()
    server = certs.issue(ca, "serve", names=("localhost", "127.0.0.1"), server=True)
    sans = server.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sans.value.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.value.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usages = server.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [u._name for u in usages] == ["serverAuth"]
    assert certs.signed_by(server.cert_pem, ca.cert_pem)
    assert not certs.signed_by(server.cert_pem, certs.new_ca().cert_pem)
    old = certs.expired(ca, "alice", client=True)
    assert old.certificate.not_valid_after_utc < datetime.now(UTC)


def test_local_credentials_are_reused_while_valid_and_renewed_before_expiry(tmp_path: Path) -> None:
    first, reused = certs.local_credentials(tmp_path / "tls")
    assert not reused
    assert oct(os.stat(first.client_key).st_mode & 0o777) == "0o600"
    assert oct(os.stat(first.tokens).st_mode & 0o777) == "0o600"
    token = first.client_token.read_text().strip()
    assert first.tokens.read_text().splitlines()[-1] == f"local {token}"
    again, reused = certs.local_credentials(tmp_path / "tls")
    assert reused
    assert again.client_token.read_text().strip() == token
    # Close to the server certificate's expiry (90 days): made afresh.
    later = datetime.now(UTC) + timedelta(days=89, hours=12)
    _, reused = certs.local_credentials(tmp_path / "tls", now=later)
    assert not reused
    assert first.client_token.read_text().strip() != token
    # A missing piece: made afresh.
    first.client_key.unlink()
    assert certs.local_credentials(tmp_path / "tls")[1] is False


# ---- the server's TLS files -----------------------------------------------------------------


def test_a_mismatched_or_missing_pair_is_refused(tmp_path: Path) -> None:
    ca, tls = server_dir(tmp_path)
    assert load(TlsFiles.from_dir(tls)).not_after_s > 0
    other = certs.issue(ca, "other", server=True)
    (tls / "tls.key").write_bytes(other.key_pem)
    with pytest.raises(TlsConfigError, match="is not the key of"):
        load(TlsFiles.from_dir(tls))
    with pytest.raises(TlsConfigError, match="cannot read"):
        load(TlsFiles(tmp_path / "none.crt", tmp_path / "none.key"))
    with pytest.raises(TlsConfigError, match="needs a client CA"):
        TlsFiles(tls / "tls.crt", tls / "tls.key", None, require_client_cert=True)


def test_the_fetcher_answers_only_when_the_files_change_and_only_with_a_whole_pair(
    tmp_path: Path,
) -> None:
    ca, tls = server_dir(tmp_path)
    files = CertificateFiles(TlsFiles.from_dir(tls))
    assert files.fetch() is None  # unchanged
    renewed = certs.issue(ca, "serve", names=("127.0.0.1",), server=True)
    # Half-way through a rotation: new certificate, old key. The current pair stays.
    certs.write_public(tls / "tls.crt", renewed.cert_pem)
    assert files.fetch() is None
    assert files.reloads == 0
    certs.write_private(tls / "tls.key", renewed.key_pem)
    assert files.fetch() is not None
    assert files.reloads == 1
    assert files.fetch() is None


def test_mutual_tls_from_a_directory_uses_its_ca(tmp_path: Path) -> None:
    _, tls = server_dir(tmp_path)
    files = TlsFiles.from_dir(tls, require_client_cert=True)
    assert files.client_ca == tls / "ca.crt"
    assert TlsFiles.from_dir(tls).client_ca is None


# ---- `quantcore serve` options --------------------------------------------------------------


def serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(["--redis", "redis://127.0.0.1:1/0", *argv])


def test_serve_demands_tls_or_an_explicit_insecure() -> None:
    with pytest.raises(ValueError, match="--insecure to serve plaintext"):
        command.tls_files(serve_args())
    assert command.tls_files(serve_args("--insecure")) is None
    files = command.tls_files(serve_args("--tls-dir", "/s", "--tls-client-auth", "require"))
    assert files == TlsFiles(Path("/s/tls.crt"), Path("/s/tls.key"), Path("/s/ca.crt"), True)
    files = command.tls_files(serve_args("--tls-cert", "/c", "--tls-key", "/k"))
    assert files == TlsFiles(Path("/c"), Path("/k"))
    for bad, why in (
        (("--tls-cert", "/c"), "go together"),
        (("--tls-dir", "/s", "--tls-cert", "/c"), "not both"),
        (("--tls-dir", "/s", "--insecure"), "contradicts"),
        (("--insecure", "--tls-client-auth", "require"), "need TLS"),
    ):
        with pytest.raises(ValueError, match=why):
            command.tls_files(serve_args(*bad))


# ---- client credentials ---------------------------------------------------------------------


def client_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    security.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_client_options_fall_back_to_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file-0123456789\n")
    env = {"QUANTCORE_CA": "/env/ca.crt", "QUANTCORE_TOKEN_FILE": str(token_file)}
    creds = security.from_arguments(client_args(), env)
    assert creds == ClientCredentials(ca=Path("/env/ca.crt"), token="from-a-file-0123456789")
    assert creds.metadata() == (("authorization", "Bearer from-a-file-0123456789"),)
    creds = security.from_arguments(client_args("--ca", "/a.crt", "--token", "t" * 20), env)
    assert creds.ca == Path("/a.crt")
    assert creds.token == "t" * 20
    assert security.from_arguments(client_args(), {}) == ClientCredentials()


def test_client_credentials_refuse_what_would_leak_or_cannot_work() -> None:
    with pytest.raises(CredentialsError, match="in the clear"):
        ClientCredentials(token="t" * 20)
    with pytest.raises(CredentialsError, match="both --cert and --key"):
        ClientCredentials(ca=Path("/ca"), cert=Path("/c"))
    with pytest.raises(CredentialsError, match="need TLS"):
        ClientCredentials(cert=Path("/c"), key=Path("/k"))
