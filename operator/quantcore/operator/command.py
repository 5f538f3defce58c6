"""`quantcore operator`: runs the MarketFeed operator (kopf) against a cluster."""

from __future__ import annotations

import argparse
import os

from quantcore.operator import handover


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig", help="kubeconfig path (default: in-cluster, then $KUBECONFIG)"
    )
    parser.add_argument(
        "--namespace", action="append", default=[], help="watch only these (repeatable)"
    )
    parser.add_argument(
        "--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz"
    )
    parser.add_argument(
        "--handover-timeout",
        type=_positive_seconds,
        default=handover.DEFAULT_TIMEOUT.total_seconds(),
        help="seconds a shard keeps a symbol moving away while the new shard has not "
        "reported it live (then it lets go anyway and posts a HandoverTimeout Event)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus /metrics on this port, on every interface (default: none)",
    )
    parser.add_argument("--verbose", action="store_true")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    if args.kubeconfig:
        # Both kopf's login and our applier's client read it from here.
        os.environ["KUBECONFIG"] = os.path.abspath(args.kubeconfig)
    import kopf

    import quantcore.operator.handlers  # noqa: F401 - registers the handlers

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from datetime import timedelta

    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        # The handlers imported above registered the metrics (quantcore.operator.metrics).
        start_http_server(args.metrics_port)
    memo = kopf.Memo(handover_timeout=timedelta(seconds=args.handover_timeout))
    asyncio.run(
        kopf.operator(
            memo=memo,
            standalone=True,
            namespaces=args.namespace,
            clusterwide=not args.namespace,
            liveness_endpoint=args.liveness,
        )
    )
    return 0
