"""`quantcore operator`: runs the MarketFeed operator (kopf) against a cluster."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping

from quantcore import logs
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
    parser.add_argument("--verbose", action="store_true", help="the same as --log-level DEBUG")
    logs.add_arguments(parser)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


# What kopf's object loggers add to a record: the object's reference (turned into fields
# below), whether to post it as an Event, and the operator's settings (not for a log line).
KOPF_RECORD_ATTRIBUTES = ("k8s_ref", "k8s_skip", "settings")


def kopf_fields(record: logging.LogRecord) -> Mapping[str, object]:
    """The object a kopf record is about: `marketfeed` and `namespace` for a MarketFeed (what
    our own records name), `object` (kind/namespace/name) for anything else."""
    ref = getattr(record, "k8s_ref", None)
    if not isinstance(ref, Mapping):
        return {}
    name, namespace, kind = ref.get("name"), ref.get("namespace"), ref.get("kind")
    if kind == "MarketFeed":
        return {"marketfeed": name, "namespace": namespace}
    return {"object": "/".join(str(part) for part in (kind, namespace, name) if part)}


def run(args: argparse.Namespace) -> int:
    import asyncio

    # Before kopf's import: a bad QUANTCORE_LOG_FORMAT is a usage error, not a traceback.
    # kopf's own `configure(log_format=LogFormat.JSON)` (what `kopf run --log-format=json`
    # does) writes other keys (message, timestamp, severity, object); embedded with
    # `kopf.operator()`, kopf leaves logging to us, so its records take our format.
    try:
        logs.configure(
            "operator",
            log_format=args.log_format,
            level="DEBUG" if args.verbose else args.log_level,
            hidden=KOPF_RECORD_ATTRIBUTES,
            hook=kopf_fields,
        )
    except ValueError as exc:
        print(f"quantcore operator: {exc}", file=sys.stderr)
        return 2
    if args.kubeconfig:
        # Both kopf's login and our applier's client read it from here.
        os.environ["KUBECONFIG"] = os.path.abspath(args.kubeconfig)
    from datetime import timedelta

    import kopf

    import quantcore.operator.handlers  # noqa: F401 - registers the handlers

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
