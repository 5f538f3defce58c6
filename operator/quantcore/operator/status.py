"""The MarketFeed's status from what a reconcile observed: pure, so it is unit-tested.

Conditions follow the Kubernetes convention (type, status, reason, message,
observedGeneration, lastTransitionTime). The SparkApplication has no conditions, only a
state string: it is mapped here, including a submission stuck in SUBMITTED.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from quantcore.operator.api import (
    Condition,
    HandoverStatus,
    MarketFeedStatus,
    PendingMove,
    RoutingSummary,
    SparkStatus,
    TopicStatus,
    UniverseStatus,
)
from quantcore.operator.handover import Move
from quantcore.routing import RoutingTable

# A submission that has not reached RUNNING by then is stuck (no executors, bad image...).
STUCK_SUBMITTED = timedelta(minutes=5)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
SPARK_FAILED = {"FAILED", "SUBMISSION_FAILED", "FAILING", "UNKNOWN"}


@dataclass(frozen=True)
class Problem:
    reason: str  # CamelCase, machine-readable
    message: str  # for people


@dataclass(frozen=True)
class Observed:
    generation: int
    table: RoutingTable
    topics: dict[str, int] = field(default_factory=dict)
    not_supported: tuple[str, ...] = ()
    failures: tuple[Problem, ...] = ()  # Kafka unreachable, universe unavailable, ...
    not_ready: tuple[str, ...] = ()  # workloads not yet available
    spark_name: str = ""
    spark_state: str = ""
    spark_submitted_at: str | None = None
    universe_refreshed_at: str | None = None
    handover: tuple[Move, ...] = ()  # symbols held by their old shard until the new one is live
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def spark_problem(state: str, submitted_at: str | None, now: datetime) -> Problem | None:
    """The SparkApplication's state string -> a failure, or None if healthy or on its way."""
    if state in SPARK_FAILED:
        return Problem("SparkFailed", f"stream job state is {state}")
    if state == "SUBMITTED":
        since = _parse_time(submitted_at)
        if since is not None and now - since > STUCK_SUBMITTED:
            minutes = int((now - since).total_seconds() // 60)
            return Problem(
                "SparkStuckSubmitted",
                f"stream job SUBMITTED {minutes} min ago and not RUNNING:"
                " check executor capacity and the image",
            )
    return None


def workload_pending(obj: dict[str, Any]) -> str | None:
    """'Kind/name' if an applied Deployment/StatefulSet is not fully available yet."""
    kind = obj.get("kind")
    if kind not in ("Deployment", "StatefulSet"):
        return None
    spec, status = obj.get("spec", {}), obj.get("status") or {}
    want = spec.get("replicas", 1)
    have = status.get("availableReplicas" if kind == "Deployment" else "readyReplicas", 0)
    if have < want:
        return f"{kind}/{obj['metadata']['name']}"
    return None


def _condition(
    type_: str,
    ok: bool,
    reason: str,
    message: str,
    generation: int,
    previous: dict[str, Condition],
    now: datetime,
) -> Condition:
    status = "True" if ok else "False"
    before = previous.get(type_)
    since = before.last_transition_time if before and before.status == status else ""
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message[:2048],
        observed_generation=generation,
        last_transition_time=since or now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def conditions(observed: Observed, previous: Iterable[Condition] = ()) -> list[Condition]:
    before: dict[str, Condition] = {c.type: c for c in previous}
    now, gen = observed.now, observed.generation
    failures: list[Problem] = list(observed.failures)
    if observed.not_supported:
        failures.insert(0, Problem("NotSupported", "; ".join(observed.not_supported)))
    spark = spark_problem(observed.spark_state, observed.spark_submitted_at, now)
    if spark is not None:
        failures.append(spark)
    waiting = list(observed.not_ready)
    if observed.spark_state != "RUNNING" and spark is None:
        waiting.append(f"SparkApplication/{observed.spark_name} ({observed.spark_state or 'new'})")

    if failures:
        first = failures[0]
        message = "; ".join(p.message for p in failures)
        ready = _condition("Ready", False, first.reason, message, gen, before, now)
        degraded = _condition("Degraded", True, first.reason, message, gen, before, now)
    elif waiting:
        message = "waiting for " + ", ".join(waiting[:10]) + (" ..." if len(waiting) > 10 else "")
        ready = _condition("Ready", False, "WorkloadsNotReady", message, gen, before, now)
        degraded = _condition("Degraded", False, "AsExpected", "", gen, before, now)
    else:
        ready = _condition("Ready", True, "Ready", "every workload is available", gen, before, now)
        degraded = _condition("Degraded", False, "AsExpected", "", gen, before, now)
    if observed.handover and not failures:
        moves = [m.describe() for m in observed.handover]
        message = (
            f"handing over {len(moves)} symbol(s) until the new shard reports them live: "
            + ", ".join(moves[:10])
            + (" ..." if len(moves) > 10 else "")
        )
        progressing = _condition("Progressing", True, "Handover", message, gen, before, now)
    elif ready.status != "True" and not failures:
        progressing = _condition(
            "Progressing", True, "Reconciling", ready.message, gen, before, now
        )
    else:
        progressing = _condition(
            "Progressing", False, "Converged" if not failures else "Blocked", "", gen, before, now
        )
    return [ready, progressing, degraded]


def build(observed: Observed, previous: MarketFeedStatus | None = None) -> MarketFeedStatus:
    table = observed.table
    return MarketFeedStatus(
        observed_generation=observed.generation,
        conditions=conditions(observed, previous.conditions if previous else ()),
        symbols=len(table.routes),
        shards=table.shards,
        partitions=table.partitions,
        routing=RoutingSummary(
            version=table.version,
            shard_loads=[len(table.shard_symbols(i)) for i in range(table.shards)],
        ),
        topics=[TopicStatus(name=n, partitions=p) for n, p in sorted(observed.topics.items())],
        spark=SparkStatus(name=observed.spark_name, state=observed.spark_state),
        universe=(
            UniverseStatus(refreshed_at=observed.universe_refreshed_at, selected=len(table.routes))
            if observed.universe_refreshed_at
            else None
        ),
        handover=(
            HandoverStatus(
                pending=[
                    PendingMove(
                        symbol=m.symbol,
                        from_shard=m.source,
                        to_shard=m.target,
                        since=m.since.strftime(TIME_FORMAT),
                    )
                    for m in observed.handover
                ]
            )
            if observed.handover
            else None
        ),
    )


def pending_moves(previous: MarketFeedStatus | None) -> tuple[Move, ...]:
    """The handover moves a previous status recorded (with when each was first seen)."""
    if previous is None or previous.handover is None:
        return ()
    moves = []
    for m in previous.handover.pending:
        since = _parse_time(m.since)
        if since is not None:
            moves.append(Move(m.symbol, m.from_shard, m.to_shard, since))
    return tuple(moves)


def handover_since(previous: MarketFeedStatus | None) -> dict[tuple[str, int], datetime]:
    """(symbol, new shard) -> when the reconcile first saw that move pending."""
    return {m.key: m.since for m in pending_moves(previous)}


def _degraded(raw: Any) -> dict[str, Any] | None:
    listed = (raw or {}).get("conditions") or []
    return next((dict(c) for c in listed if c.get("type") == "Degraded"), None)


def newly_degraded(before: Any, after: dict[str, Any]) -> dict[str, Any] | None:
    """The Degraded condition of `after` (a status as written) when it is True and was not
    already True for the same reason and message in `before`; else None."""
    now, was = _degraded(after), _degraded(before)
    if now is None or now.get("status") != "True":
        return None
    if was is not None and all(was.get(k) == now.get(k) for k in ("status", "reason", "message")):
        return None
    return now


def as_patch(status: MarketFeedStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


def summary(conditions_: Sequence[Condition]) -> str:
    return ", ".join(f"{c.type}={c.status}({c.reason})" for c in conditions_)
