"""`quantcore serve`: run the MarketData gRPC server over a Redis signal store.

Secure by default: it starts only with a TLS certificate (`--tls-dir` in cert-manager's
layout, or `--tls-cert`/`--tls-key`) or with an explicit `--insecure` for plaintext.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quantcore.serve.credentials import TlsFiles

from quantcore import logs, redisauth


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis", required=True, help="signal store, e.g. rediss://127.0.0.1:6379/0 (TLS)"
    )
    redisauth.add_arguments(parser)
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=50051, help="gRPC port (0: any free port)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus /metrics on this port, on --host (default: no metrics endpoint)",
    )
    parser.add_argument(
        "--routing",
        type=Path,
        default=None,
        help="routing table JSON naming the served symbols, re-read when it changes"
        " (default: every symbol in Redis)",
    )
    parser.add_argument("--max-streams", type=int, default=10_000, help="open Subscribe calls")
    history = parser.add_argument_group("history")
    history.add_argument(
        "--lake",
        default=None,
        help="the lake History reads: a directory (every sink under it, committed files only; it"
        " may not exist yet) or s3a://bucket/prefix (read through a local mirror, --lake-cache);"
        " without it History answers FAILED_PRECONDITION",
    )
    history.add_argument(
        "--lake-cache",
        type=Path,
        default=None,
        help="with an s3a:// lake: where its files are mirrored (default: a directory of this"
        " process's, removed when it exits)",
    )
    history.add_argument(
        "--lake-cache-bytes",
        type=int,
        default=1 << 30,
        help="the mirror's budget: copies used longest ago go beyond it (default 1 GiB)",
    )
    history.add_argument(
        "--history-max-rows",
        type=int,
        default=100_000,
        help="rows one History call returns at most; the last page then carries a token to"
        " go on with (default 100000)",
    )
    history.add_argument(
        "--history-page-rows",
        type=int,
        default=5_000,
        help="rows per History page at most (default 5000)",
    )
    parser.add_argument(
        "--shutdown-grace", type=float, default=5.0, help="seconds to drain on SIGTERM"
    )
    logs.add_arguments(parser)
    tls = parser.add_argument_group("security")
    tls.add_argument(
        "--tls-dir",
        type=Path,
        default=None,
        help="directory holding tls.crt, tls.key and (for --tls-client-auth require) ca.crt,"
        " as a cert-manager Secret is mounted; re-read when they change",
    )
    tls.add_argument("--tls-cert", type=Path, default=None, help="server certificate (PEM)")
    tls.add_argument("--tls-key", type=Path, default=None, help="its private key (PEM)")
    tls.add_argument(
        "--tls-client-ca",
        type=Path,
        default=None,
        help="CA that signs client certificates (default with --tls-dir: its ca.crt)",
    )
    tls.add_argument(
        "--tls-client-auth",
        choices=["none", "require"],
        default="none",
        help="require a client certificate signed by the client CA (mutual TLS)",
    )
    tls.add_argument(
        "--insecure",
        action="store_true",
        help="serve plaintext without TLS: an explicit opt-out, for a trusted network only",
    )
    tls.add_argument(
        "--tokens",
        type=Path,
        default=None,
        help="bearer-token file (`identity token [symbols=..] [methods=..]` per line),"
        " re-read when it changes; without it any client that connects is served",
    )
    tls.add_argument(
        "--streams-per-identity",
        type=int,
        default=100,
        help="open Subscribe calls one token identity may hold (0: no limit; default 100)",
    )
    tls.add_argument(
        "--symbols-per-stream",
        type=int,
        default=0,
        help="symbols one Subscribe call of a token identity may read (0: no limit)",
    )
    tls.add_argument(
        "--reflection", choices=["on", "off"], default="on", help="gRPC server reflection"
    )
    tls.add_argument(
        "--health-port",
        type=int,
        default=None,
        help="also serve gRPC health alone in plaintext on this port (for kubelet probes)",
    )


def tls_files(args: argparse.Namespace) -> TlsFiles | None:
    """The TLS files the options name; ValueError when they are incomplete or contradict."""
    from quantcore.serve.credentials import TlsFiles

    require = args.tls_client_auth == "require"
    if args.tls_dir is not None:
        if args.tls_cert or args.tls_key:
            raise ValueError("give --tls-dir or --tls-cert/--tls-key, not both")
        files = TlsFiles.from_dir(args.tls_dir, require)
        if args.tls_client_ca is not None:
            files = TlsFiles(files.cert, files.key, args.tls_client_ca, require)
    elif args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        files = TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca, require)
    else:
        if not args.insecure:
            raise ValueError(
                "no TLS certificate: give --tls-dir DIR or --tls-cert/--tls-key,"
                " or --insecure to serve plaintext"
            )
        if require or args.tls_client_ca:
            raise ValueError("--tls-client-auth/--tls-client-ca need TLS")
        return None
    if args.insecure:
        raise ValueError("--insecure contradicts the TLS options given")
    return files


def _lake(args: argparse.Namespace) -> dict[str, Any]:
    """The ServeConfig fields of --lake: a directory, or an s3a:// lake and its mirror."""
    from quantcore import lakemirror

    if args.lake is None:
        return {}
    if not lakemirror.is_remote(args.lake):
        return {"lake_path": Path(args.lake)}
    lakemirror.parse(args.lake)  # ValueError names a malformed location
    cache = args.lake_cache
    if cache is None:
        import atexit
        import shutil
        import tempfile

        cache = Path(tempfile.mkdtemp(prefix="quantcore-lake-"))
        atexit.register(shutil.rmtree, cache, True)
    return {"lake_path": cache, "lake_uri": args.lake, "lake_cache_bytes": args.lake_cache_bytes}


def run(args: argparse.Namespace) -> int:
    import asyncio
    import signal
    import sys

    from prometheus_client import start_http_server

    from quantcore.serve.access import Limits
    from quantcore.serve.historycall import HistoryLimits
    from quantcore.serve.server import MarketDataServer, ServerConfig

    try:
        logs.configure("serve", **logs.from_args(args))
        tls = tls_files(args)
        history = HistoryLimits(args.history_max_rows, args.history_page_rows)
        lake = _lake(args)
    except ValueError as exc:
        print(f"quantcore serve: {exc}", file=sys.stderr)
        return 2
    config = ServerConfig(
        redis_url=args.redis,
        redis_auth=redisauth.from_args(args),
        host=args.host,
        port=args.port,
        max_streams=args.max_streams,
        shutdown_grace_s=args.shutdown_grace,
        routing_path=args.routing,
        tls=tls,
        tokens_path=args.tokens,
        limits=Limits(args.streams_per_identity, args.symbols_per_stream),
        reflection=args.reflection == "on",
        health_port=args.health_port,
        **lake,
        history=history,
    )

    async def main() -> None:
        if args.metrics_port is not None:
            # Before the gRPC port: a taken metrics port fails the start, not a live server.
            start_http_server(args.metrics_port, addr=args.host)
        server = MarketDataServer(config)
        port = await server.start()
        # One parseable line: `quantcore up` and tests learn the port from it.
        security = "plaintext (--insecure)" if tls is None else "TLS"
        if tls is not None and tls.require_client_cert:
            security += " with client certificates"
        security += ", bearer tokens" if args.tokens else ", no tokens"
        print(f"quantcore serve: listening on {args.host}:{port} ({security})", flush=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.stop()))
        await server.wait_stopped()

    try:
        asyncio.run(main())
    except (OSError, ValueError) as exc:  # a bind, or unusable TLS or token files
        print(f"quantcore serve: {exc}", file=sys.stderr)
        return 1
    return 0
