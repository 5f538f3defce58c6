"""The one idempotent reconcile that create, update, resume and the drift timer all run:
read the object and the current routing table -> plan -> topics -> handover step -> apply ->
prune -> status.

A symbol moving between shards is handed over make-before-break (quantcore.operator.handover):
the shard ConfigMaps written are the handover's step, not the final table, until each gaining
shard reports its new symbols live; the handover timer re-runs the reconcile meanwhile.

Blocking by design (kube and Kafka clients are synchronous); kopf runs it in a worker thread.
Safe to kill at any point: the routing ConfigMap is written only after the topics have the
partitions it names, and re-running with the same inputs plans the same table and objects.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from quantcore import redisacl
from quantcore.operator import (
    handover,
    metrics,
    planner,
    rbac,
    shardlive,
    status,
    topics,
    universe,
)
from quantcore.operator.api import MarketFeed, MarketFeedStatus
from quantcore.operator.applier import Applier, Kube, KubeError
from quantcore.routing import CONFIGMAP_KEY, RoutingTable

log = logging.getLogger(__name__)

CONFIGMAP = rbac.BY_KIND[("v1", "ConfigMap")]
SPARK = rbac.BY_KIND[("sparkoperator.k8s.io/v1beta2", "SparkApplication")]
APPLY_THREADS = 8


LiveQuery = Callable[[MarketFeed], dict[int, frozenset[str]]]


class RetryLater(Exception):
    """A dependency (Kafka, the ticker endpoint) is unavailable; the status says which."""

    def __init__(self, message: str, status_patch: dict[str, Any]) -> None:
        super().__init__(message)
        self.status_patch = status_patch


@dataclass(frozen=True)
class Outcome:
    table: RoutingTable
    status_patch: dict[str, Any] | None  # None when the status is already what it should be
    changed_shards: frozenset[int]
    pruned: tuple[str, ...]
    pending: tuple[handover.Move, ...] = ()  # still held by their old shard
    forced: tuple[handover.Move, ...] = ()  # released without the new shard live (timeout)
    change: metrics.RoutingChange = metrics.NO_CHANGE  # vs the table read
    children: dict[str, int] = field(default_factory=dict)  # planned objects by kind


def current_table(applier: Applier, feed: MarketFeed) -> RoutingTable | None:
    cm = applier.get(CONFIGMAP, feed.namespace, planner.routing_configmap_name(feed.name))
    if cm is None or CONFIGMAP_KEY not in (cm.get("data") or {}):
        return None
    return RoutingTable.from_json(cm["data"][CONFIGMAP_KEY])


def applied_shard_tables(applier: Applier, feed: MarketFeed) -> dict[int, RoutingTable]:
    """shard -> the one-shard table its ConfigMap holds now (the feed's own ConfigMaps only)."""
    tables: dict[int, RoutingTable] = {}
    for cm in applier.owned(CONFIGMAP, feed):
        label = (cm["metadata"].get("labels") or {}).get(planner.SHARD_LABEL, "")
        text = (cm.get("data") or {}).get(CONFIGMAP_KEY)
        if not label.isdigit() or text is None:
            continue
        try:
            tables[int(label)] = RoutingTable.from_json(text)
        except (ValueError, KeyError, TypeError) as exc:
            # Rewritten from the final table below; the shard keeps what it had meanwhile.
            log.warning(
                "%s: unreadable routing table: %s",
                cm["metadata"]["name"],
                exc,
                extra={"configmap": cm["metadata"]["name"], "shard": int(label)},
            )
    return tables


def handover_step(
    applier: Applier,
    feed: MarketFeed,
    final: RoutingTable,
    previous: MarketFeedStatus | None,
    now: datetime,
    ask_live: LiveQuery,
    timeout: timedelta,
) -> handover.Step:
    """The shard tables to write now; asks the shards only while a symbol is moving."""
    applied = applied_shard_tables(applier, feed)
    since = status.handover_since(previous)
    step = handover.step(final, applied, {}, since, now, timeout)
    if step.pending:
        step = handover.step(final, applied, ask_live(feed), since, now, timeout)
    return step


def ensure_redis_credentials(applier: Applier, feed: MarketFeed) -> bool:
    """A managed, secured Redis's passwords: a Secret of random ones, created when absent
    (True). One that exists (ours from before, or the user's) is kept as it is."""
    redis = feed.spec.redis
    if redis.mode != "managed" or redis.insecure:
        return False
    passwords = {user: secrets.token_urlsafe(32) for user in redisacl.PIPELINE_USERS}
    secret = planner.redis_credentials_secret(feed, passwords)
    created = applier.create_if_absent(secret, feed, rbac.SECRET)
    if created:
        log.info("%s/%s: created Secret %s", feed.namespace, feed.name, secret["metadata"]["name"])
    return created


def resolve_symbols(
    feed: MarketFeed, current: RoutingTable | None, previous: MarketFeedStatus | None, now: datetime
) -> tuple[list[str], str | None]:
    """The symbols to route, and when the universe was last refreshed (None for a list)."""
    spec = feed.spec
    if spec.symbols is not None:
        return list(spec.symbols), None
    assert spec.universe is not None  # the CRD requires exactly one of the two
    last = previous.universe.refreshed_at if previous and previous.universe else ""
    last_at = status._parse_time(last)
    due = (
        current is None
        or last_at is None
        or now - last_at >= timedelta(seconds=spec.universe.refresh_seconds)
        or (previous is not None and previous.observed_generation != feed.generation)
    )
    if not due:
        assert current is not None
        return list(current.symbols), last
    url = universe.ticker_url(spec.universe, spec.endpoints.rest_url)
    ranked = universe.rank(universe.fetch_tickers(url), spec.universe)
    chosen = universe.select(
        ranked, current.symbols if current else (), spec.universe.top, spec.universe.hysteresis
    )
    return chosen, now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _previous_status(body: dict[str, Any]) -> MarketFeedStatus | None:
    raw = body.get("status")
    if not raw:
        return None
    try:
        return MarketFeedStatus.model_validate(raw)
    except ValueError:
        return None  # written by an older operator: rebuilt from scratch


def _patch_if_changed(
    new: MarketFeedStatus, previous: MarketFeedStatus | None
) -> dict[str, Any] | None:
    return None if previous == new else status.as_patch(new)


def reconcile(
    kube: Kube,
    body: dict[str, Any],
    now: datetime | None = None,
    ask_live: LiveQuery = shardlive.ask,
    handover_timeout: timedelta = handover.DEFAULT_TIMEOUT,
) -> Outcome:
    now = now or datetime.now(UTC)
    feed = MarketFeed.from_object(body)
    previous = _previous_status(body)
    applier = Applier(kube)
    current: RoutingTable | None = None

    def blocked(reason: str, message: str) -> RetryLater:
        observed = status.Observed(
            generation=feed.generation,
            table=current or RoutingTable(partitions=0, shards=0),
            failures=(status.Problem(reason, message),),
            # A handover in progress stays recorded (with its start times) while blocked.
            handover=status.pending_moves(previous),
            now=now,
        )
        new = status.build(observed, previous)
        return RetryLater(message, status.as_patch(new))

    try:
        current = current_table(applier, feed)
    except KubeError as exc:
        reason = "Forbidden" if exc.status == 403 else "ApiUnavailable"
        raise blocked(reason, f"reading the routing table: {exc}") from exc

    if not feed.spec.serving.secured:
        # Admitted before the CRD demanded it: change nothing until the spec says how to serve.
        raise blocked(
            "ServingInsecure",
            "serving is secure by default: set spec.serving.tls.secretName (a Secret with"
            " tls.crt and tls.key) or, on a trusted network only, spec.serving.insecure: true",
        )

    if not feed.spec.kafka.secured:
        # The same for Kafka: no pod gets Kafka settings the spec never asked for.
        raise blocked(
            "KafkaInsecure",
            "kafka is secure by default: set spec.kafka.credentials (feedSecretName and"
            " streamSecretName: Secrets with username and password of SCRAM users) or, on a"
            " trusted network only, spec.kafka.insecure: true",
        )

    try:
        symbols, refreshed_at = resolve_symbols(feed, current, previous, now)
    except (OSError, ValueError) as exc:
        if current is None:
            raise blocked("UniverseUnavailable", f"24 h ticker unavailable: {exc}") from exc
        symbols, refreshed_at = list(current.symbols), None  # keep following what we have

    from confluent_kafka import KafkaException

    try:
        have = topics.existing_partitions(feed.spec)
        min_partitions = max(have.values(), default=0)
        final = planner.next_table(feed.spec, current, symbols, min_partitions)
        outcome = topics.ensure(feed.spec, final.partitions)
    except KafkaException as exc:
        raise blocked("KafkaUnavailable", f"Kafka at {feed.spec.kafka.bootstrap}: {exc}") from exc

    try:
        step = handover_step(applier, feed, final, previous, now, ask_live, handover_timeout)
    except KubeError as exc:
        reason = "Forbidden" if exc.status == 403 else "ApiUnavailable"
        raise blocked(reason, f"reading the shard routing tables: {exc}") from exc
    for move in step.forced:
        log.warning(
            "%s/%s: released %s without shard %d reporting it live within %ds",
            feed.namespace,
            feed.name,
            move.describe(),
            move.target,
            handover_timeout.total_seconds(),
            extra={
                "event": "handover_timeout",
                "marketfeed": feed.name,
                "namespace": feed.namespace,
                "symbol": move.symbol,
                "from_shard": move.source,
                "to_shard": move.target,
            },
        )
    plan = planner.plan(feed, current, symbols, min_partitions, shard_tables=step.tables)

    # The routing table first (shards read it), then everything else in parallel.
    routing, *rest = plan.objects
    try:
        ensure_redis_credentials(applier, feed)
        applied = [applier.apply(routing, feed)]
        with ThreadPoolExecutor(APPLY_THREADS) as pool:
            applied += list(pool.map(lambda o: applier.apply(o, feed), rest))
        pruned = applier.prune(feed, plan.objects, rbac.CHILDREN)
    except KubeError as exc:
        # Missing RBAC or a rejected child: say so in Degraded (kopf also posts an Event).
        reason = "Forbidden" if exc.status == 403 else "ApplyFailed"
        raise blocked(reason, f"applying children: {exc}") from exc

    spark = next(o for o in applied if o["kind"] == "SparkApplication")
    app_state = (spark.get("status") or {}).get("applicationState") or {}
    observed = status.Observed(
        generation=feed.generation,
        table=plan.table,
        topics=outcome.partitions,
        not_supported=outcome.not_supported,
        not_ready=tuple(p for o in applied if (p := status.workload_pending(o))),
        spark_name=spark["metadata"]["name"],
        spark_state=app_state.get("state", ""),
        spark_submitted_at=(spark.get("status") or {}).get("lastSubmissionAttemptTime"),
        universe_refreshed_at=refreshed_at,
        handover=step.pending,
        now=now,
    )
    new = status.build(observed, previous)
    if plan.changed_shards or pruned:
        log.info(
            "%s/%s: routing v%d, shards changed %s, pruned %s",
            feed.namespace,
            feed.name,
            plan.table.version,
            sorted(plan.changed_shards),
            pruned,
            extra={
                "event": "reshard",
                "marketfeed": feed.name,
                "namespace": feed.namespace,
                "routing_version": plan.table.version,
                "changed_shards": sorted(plan.changed_shards),
                "pruned": pruned,
                "pending": [m.describe() for m in step.pending],
            },
        )
    return Outcome(
        plan.table,
        _patch_if_changed(new, previous),
        plan.changed_shards,
        tuple(pruned),
        pending=step.pending,
        forced=step.forced,
        change=metrics.routing_change(current, plan.table),
        children=metrics.children_by_kind(plan.objects),
    )


__all__ = ["KubeError", "Outcome", "RetryLater", "reconcile"]
