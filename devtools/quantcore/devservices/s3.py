"""An S3 API for the stream job's checkpoints in tests: moto's server (an in-memory S3, installed
with the dev extras), in one of two places.

- `S3Server(workdir).start()`: on a free loopback port, for integration tests; returns the
  endpoint (`http://127.0.0.1:PORT`) once a ListBuckets answers.
- `start_in_node(cluster_dir)`: inside a dev cluster's node namespace at the node address
  (10.213.0.2), where pods reach it as CoreDNS is reached, with a loopback relay for the host.
  It is a node process: the node's teardown ends it.

Both hold nothing on disk (moto keeps objects in memory), so a stopped server leaves nothing
behind; `create_bucket` makes a bucket of ours on a server of ours. The credentials are
made-up keys: moto checks no signatures, but the SDKs refuse to sign without some.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantcore.devservices.ports import LOOPBACK, free_port, is_listening
from quantcore.devservices.process import ChildProcess, ManagedService, ProcessError, ServiceError

REGION = "us-east-1"
ACCESS_KEY = "quantcore-test-access-key"
SECRET_KEY = "quantcore-test-secret-key"
DEFAULT_BUCKET = "quantcore-checkpoints"
# Inside the node namespace nothing else listens here (the namespace is the cluster's own).
NODE_PORT = 9000


def moto_command(host: str, port: int, python: str = sys.executable) -> list[str]:
    """moto's server bound to host:port (this module's `serve`), run by this interpreter (which
    has moto)."""
    return [python, "-m", "quantcore.devservices.s3", "--host", host, "--port", str(port)]


def serve(host: str, port: int) -> None:
    """moto's S3 app on werkzeug, as `python -m moto.server` runs it, except for one thing: a
    request with `Expect: 100-continue` gets one interim `100 Continue`, not two. Python's
    http.server sends one when it reads the headers and werkzeug another before the body; the
    AWS SDK v2 (S3A's uploads from local files: RocksDB state store files) takes the second as
    the final answer and fails with status code 100."""
    # Pods name the server by a Service (s3.<ns>.svc): without this, moto takes the host's
    # first label for a virtual-hosted bucket ("s3") and answers every request NoSuchBucket.
    os.environ["S3_IGNORE_SUBDOMAIN_BUCKETNAME"] = "true"
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    class OneContinue(MotoRequestHandler):
        def handle_expect_100(self) -> bool:
            return True  # werkzeug sends the one 100 Continue when the app reads the body

    run_simple(
        host,
        port,
        DomainDispatcherApplication(create_backend_app),
        threaded=True,
        request_handler=OneContinue,
    )


def client_env(endpoint: str) -> dict[str, str]:
    """The environment that points an AWS SDK (and the stream job, quantcore.stream.s3a) at
    `endpoint` with the test keys."""
    return {
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
    }


def client(endpoint: str) -> Any:
    """A boto3 S3 client for `endpoint`: path-style, short timeouts, no retries (a probe that
    fails while the server boots is expected)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=2,
            read_timeout=10,
            retries={"max_attempts": 1},
        ),
    )


def answers(endpoint: str) -> bool:
    """True when ListBuckets succeeds."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client(endpoint).list_buckets()
    except (BotoCoreError, ClientError):
        return False
    return True


def create_bucket(endpoint: str, bucket: str) -> None:
    """Create `bucket`; one this server already holds for us is fine."""
    s3 = client(endpoint)
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket)


def object_keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    """Every key under `prefix` in `bucket`, sorted."""
    paginator = client(endpoint).get_paginator("list_objects_v2")
    keys: list[str] = []
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return sorted(keys)


class S3Server(ManagedService):
    """moto's server on a loopback port, living in `workdir` (its log only); stop() ends it."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        die_with_parent: bool = False,
        start_timeout: float = 60.0,
    ) -> None:
        super().__init__(
            workdir, "s3.log", die_with_parent=die_with_parent, start_timeout=start_timeout
        )
        self.port = port or free_port()

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> str:
        """Start the server and wait for ListBuckets; returns the endpoint."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._launch(
            "s3",
            moto_command(LOOPBACK, self.port),
            lambda: is_listening(self.port) and answers(self.endpoint),
            "answering ListBuckets",
        )
        return self.endpoint


@dataclass(frozen=True)
class NodeS3:
    """An S3 server in a node: `endpoint` for pods, `host_endpoint` (a relay) for the host."""

    endpoint: str
    host_endpoint: str
    bucket: str
    pid: int


def start_in_node(
    cluster_dir: Path,
    *,
    bucket: str = DEFAULT_BUCKET,
    port: int = NODE_PORT,
    timeout: float = 60.0,
) -> NodeS3:
    """Start moto's server inside the node of the cluster in `cluster_dir`, at the node address,
    and create `bucket`. It runs until the node is torn down (`quantcore.devcluster down`)."""
    from quantcore.devcluster import cluster, nodeconfig

    namespace = cluster.node_namespace(cluster_dir)
    target = f"{nodeconfig.NODE_IP}:{port}"
    process = ChildProcess(
        "s3", namespace.enter(moto_command(nodeconfig.NODE_IP, port)), cluster_dir / "s3.log"
    )
    process.start()
    host_endpoint = f"http://{LOOPBACK}:{cluster.forward(cluster_dir, target, 's3')}"
    _wait(process, lambda: answers(host_endpoint), timeout)
    create_bucket(host_endpoint, bucket)
    return NodeS3(f"http://{target}", host_endpoint, bucket, process.pid)


def _wait(process: ChildProcess, probe: Callable[[], bool], timeout: float) -> None:
    try:
        process.wait_ready(probe, timeout, "answering ListBuckets")
    except ProcessError as error:
        process.stop()
        raise ServiceError(str(error)) from error


def main() -> None:
    import argparse
    import os
    import signal

    parser = argparse.ArgumentParser(description="moto's S3 server (see serve)")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # moto builds some URLs from MOTO_PORT.
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
