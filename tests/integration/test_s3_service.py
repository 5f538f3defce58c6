"""The test S3 API (quantcore.devservices.s3): moto's server on loopback, a bucket of ours, and
uploads that announce `Expect: 100-continue` (as the AWS SDK v2 does) answered with exactly one
interim response."""

from __future__ import annotations

import socket
import urllib.parse
import uuid

import pytest

from quantcore.devservices import s3

pytestmark = pytest.mark.integration


def _raw_put(endpoint: str, path: str, body: bytes) -> bytes:
    """A PUT that waits for `100 Continue` before its body; returns everything the server
    sent until it closed the connection."""
    url = urllib.parse.urlsplit(endpoint)
    assert url.hostname is not None
    assert url.port is not None
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        head = (
            f"PUT {path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Length: {len(body)}\r\n"
            "Content-Type: application/octet-stream\r\nExpect: 100-continue\r\n"
            "Connection: close\r\n\r\n"
        )
        sock.sendall(head.encode())
        interim = sock.recv(4096)
        sock.sendall(body)
        received = [interim]
        while chunk := sock.recv(65536):
            received.append(chunk)
    return b"".join(received)


def test_uploads_expecting_100_continue_get_one_interim_answer(s3_endpoint: str) -> None:
    bucket = f"svc-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(s3_endpoint, bucket)
    s3.create_bucket(s3_endpoint, bucket)  # ours already: fine
    answer = _raw_put(s3_endpoint, f"/{bucket}/state/000008.sst", b"x" * 200_000)
    assert answer.count(b"100 Continue") == 1, answer[:300]
    assert b"HTTP/1.1 200 OK" in answer, answer[:300]
    assert s3.object_keys(s3_endpoint, bucket) == ["state/000008.sst"]
    assert s3.object_keys(s3_endpoint, bucket, "other/") == []
