"""kopf handlers: thin entry points into the one idempotent reconcile (reconcile.py).

create, update, resume and a drift/refresh timer all run the same reconcile; delete honours
the topics' deletion policy behind kopf's finalizer. kopf keeps its progress in annotations
(the strict CRD schema would prune it from status), and watches have timeouts so a silently
stalled watch is re-established.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import kopf

from quantcore import logs
from quantcore.operator import api, events, metrics, status, topics
from quantcore.operator.applier import Kube, KubeError
from quantcore.operator.handover import DEFAULT_TIMEOUT
from quantcore.operator.reconcile import RetryLater, reconcile

RESOURCE = (api.GROUP, api.VERSION, api.PLURAL)
DRIFT_INTERVAL_S = 30.0
# While symbols are handed over between shards, how often to ask whether the new shard has
# them live (each answer lets the old shard go a step sooner).
HANDOVER_INTERVAL_S = 5.0
FINALIZER = "quantcore.io/topics"

# One reconcile at a time per MarketFeed: the timer may fire while an update runs.
_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
log = logging.getLogger(__name__)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="quantcore.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="quantcore.io", key="last-handled-configuration"
    )
    settings.persistence.finalizer = FINALIZER
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    settings.watching.connect_timeout = 10
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 8
    memo.kube = Kube()


def _warn_if_new(body: kopf.Body, status_patch: dict[str, Any]) -> None:
    """A Warning Event on the MarketFeed when it becomes Degraded or the reason changes.

    kopf's own log lines are not posted as Events (settings.posting.loggers is off), and a
    retry every 15 s should not repeat the same Event, so only a change is announced.
    """
    degraded = status.newly_degraded(body.get("status"), status_patch)
    if degraded is not None:
        kopf.event(body, type="Warning", reason=degraded["reason"], message=degraded["message"])


@contextlib.contextmanager
def _measured() -> Iterator[dict[str, str]]:
    """Times the block and counts its outcome: "ok" unless the block sets another; an
    exception the block did not classify counts as "error"."""
    outcome = {"outcome": "ok"}
    started = time.perf_counter()
    try:
        yield outcome
    except (kopf.TemporaryError, kopf.PermanentError):
        raise
    except Exception:
        outcome["outcome"] = "error"
        raise
    finally:
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        metrics.RECONCILES.labels(outcome["outcome"]).inc()


def _run(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any) -> None:
    obj = dict(body)
    key = f"{body.metadata.namespace}/{body.metadata.name}"
    # Every record of this reconcile (ours, not kopf's, which carry the object) names the feed.
    feed_context = logs.log_context(
        marketfeed=body.metadata.name, namespace=body.metadata.namespace
    )
    with feed_context, _locks[key], _measured() as outcome_of:
        try:
            outcome = reconcile(
                memo.kube, obj, handover_timeout=memo.get("handover_timeout", DEFAULT_TIMEOUT)
            )
        except RetryLater as exc:
            outcome_of["outcome"] = "retry"
            log.warning(
                "reconcile blocked, retrying in 15s: %s",
                exc,
                extra={"event": "reconcile", "outcome": "retry"},
            )
            patch.status.update(exc.status_patch)
            _warn_if_new(body, exc.status_patch)
            raise kopf.TemporaryError(str(exc), delay=15) from exc
        except KubeError as exc:
            outcome_of["outcome"] = "error"
            log.error(
                "reconcile failed: %s",
                exc,
                extra={"event": "reconcile", "outcome": "error", "status": exc.status},
            )
            # Not classified by the reconcile (its API failures arrive as RetryLater).
            reason = "Forbidden" if exc.status == 403 else "ApiError"
            kopf.event(body, type="Warning", reason=reason, message=str(exc)[:1000])
            if exc.status in (400, 422):  # the plan itself is invalid: retrying cannot help
                raise kopf.PermanentError(str(exc)) from exc
            raise kopf.TemporaryError(str(exc), delay=10) from exc
    metrics.record_feed(
        body.metadata.namespace or "",
        body.metadata.name or "",
        outcome.table,
        outcome.change,
        outcome.children,
        len(outcome.forced),
    )
    # A status change is news; a drift check that changed nothing is told only in debug.
    log.log(
        logging.INFO if outcome.status_patch is not None else logging.DEBUG,
        "reconciled: routing v%d, %d handover(s) pending",
        outcome.table.version,
        len(outcome.pending),
        extra={
            "event": "reconcile",
            "outcome": "ok",
            "marketfeed": body.metadata.name,
            "namespace": body.metadata.namespace,
            "routing_version": outcome.table.version,
            "status_changed": outcome.status_patch is not None,
            "pending": [m.describe() for m in outcome.pending],
        },
    )
    for event in events.routing_events(
        outcome.change, outcome.table, universe=body.spec.get("universe") is not None
    ):
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    if outcome.status_patch is not None:
        patch.status.update(outcome.status_patch)
    if outcome.forced:
        moves = ", ".join(m.describe() for m in outcome.forced[:20])
        kopf.event(
            body,
            type="Warning",
            reason="HandoverTimeout",
            message=f"released without the new shard reporting them live: {moves}"[:1000],
        )


@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
@kopf.on.resume(*RESOURCE)
def on_change(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    _run(body, patch, memo, logger)


@kopf.timer(*RESOURCE, interval=DRIFT_INTERVAL_S, initial_delay=DRIFT_INTERVAL_S)
def repair_drift(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    """Repairs drift and refreshes the universe selector (when its refresh is due)."""
    _run(body, patch, memo, logger)


def handover_pending(status: kopf.Status, **_: Any) -> bool:
    return bool((status.get("handover") or {}).get("pending"))


@kopf.timer(
    *RESOURCE,
    interval=HANDOVER_INTERVAL_S,
    initial_delay=HANDOVER_INTERVAL_S,
    when=handover_pending,
)
def follow_handover(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    """Re-runs the reconcile every few seconds while a symbol is being handed over."""
    _run(body, patch, memo, logger)


@kopf.on.delete(*RESOURCE)
def on_delete(body: kopf.Body, logger: Any, **_: Any) -> None:
    """Children are garbage-collected through owner references; topics follow the policy."""
    metrics.forget_feed(body.metadata.namespace or "", body.metadata.name or "")
    spec = api.MarketFeedSpec.model_validate(dict(body.spec))
    if spec.kafka.deletion_policy == "Delete":
        from confluent_kafka import KafkaException

        try:
            deleted = topics.delete(spec)
        except KafkaException as exc:
            raise kopf.TemporaryError(f"cannot delete topics yet: {exc}", delay=15) from exc
        logger.info("deleted topics %s", deleted)
    else:
        logger.info("kept topics %s (deletionPolicy Retain)", topics.topic_names(spec))
