"""Status from observations: conditions with reasons, Spark state mapping, change detection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from quantcore.operator import status
from quantcore.routing import rebalance

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TABLE = rebalance(None, ["BTCUSDT", "ETHUSDT", "SOLUSDT"], 2, 4)


def conds(**kw) -> dict[str, tuple[str, str]]:
    observed = status.Observed(generation=3, table=TABLE, now=NOW, spark_name="x-stream", **kw)
    return {c.type: (c.status, c.reason) for c in status.conditions(observed)}


def test_ready_when_everything_runs() -> None:
    c = conds(spark_state="RUNNING")
    assert c == {
        "Ready": ("True", "Ready"),
        "Progressing": ("False", "Converged"),
        "Degraded": ("False", "AsExpected"),
    }


def test_waiting_for_workloads_is_progressing() -> None:
    c = conds(spark_state="RUNNING", not_ready=("Deployment/x-feed-0",))
    assert c["Ready"] == ("False", "WorkloadsNotReady")
    assert c["Progressing"] == ("True", "Reconciling")


def test_not_supported_partitions_is_reported_like_strimzi() -> None:
    c = conds(
        spark_state="RUNNING", not_supported=("t: has 8 partitions; Kafka cannot remove any",)
    )
    assert c["Ready"] == ("False", "NotSupported")
    assert c["Degraded"] == ("True", "NotSupported")


def test_spark_state_mapping() -> None:
    fresh = (NOW - timedelta(minutes=1)).isoformat()
    stale = (NOW - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert status.spark_problem("SUBMITTED", fresh, NOW) is None
    stuck = status.spark_problem("SUBMITTED", stale, NOW)
    assert stuck is not None
    assert stuck.reason == "SparkStuckSubmitted"
    assert status.spark_problem("FAILED", None, NOW).reason == "SparkFailed"  # type: ignore[union-attr]
    assert conds(spark_state="SUBMITTED", spark_submitted_at=stale)["Degraded"] == (
        "True",
        "SparkStuckSubmitted",
    )


def test_unchanged_observation_gives_an_equal_status() -> None:
    observed = status.Observed(generation=3, table=TABLE, now=NOW, spark_state="RUNNING")
    first = status.build(observed)
    later = status.build(
        status.Observed(
            generation=3, table=TABLE, now=NOW + timedelta(hours=1), spark_state="RUNNING"
        ),
        first,
    )
    assert later == first  # transition times kept, so no status write
    assert first.routing.shard_loads == [2, 1]
    assert status.as_patch(first)["observedGeneration"] == 3


def test_an_event_is_due_only_when_degraded_starts_or_changes() -> None:
    table = rebalance(None, ["BTCUSDT"], 10, 1)
    forbidden = status.Observed(
        generation=1, table=table, failures=(status.Problem("Forbidden", "no patch"),), now=NOW
    )
    first = status.as_patch(status.build(forbidden))
    announced = status.newly_degraded(None, first)
    assert announced is not None
    assert (announced["reason"], announced["message"]) == ("Forbidden", "no patch")
    # The same failure on the next retry: no second Event.
    assert status.newly_degraded(first, first) is None
    # A different failure: announced again.
    kafka = status.Observed(
        generation=1, table=table, failures=(status.Problem("KafkaUnavailable", "down"),), now=NOW
    )
    changed = status.newly_degraded(first, status.as_patch(status.build(kafka)))
    assert changed is not None
    assert changed["reason"] == "KafkaUnavailable"
    # Healthy again: nothing to announce.
    healthy = status.Observed(generation=1, table=table, spark_state="RUNNING", now=NOW)
    assert status.newly_degraded(first, status.as_patch(status.build(healthy))) is None


def test_a_pending_handover_is_progressing_and_round_trips_through_the_status() -> None:
    from quantcore.operator.api import MarketFeedStatus
    from quantcore.operator.handover import Move

    since = datetime(2026, 1, 1, 11, 59, 30, tzinfo=UTC)
    moves = (Move("ETHUSDT", 0, 1, since),)
    observed = status.Observed(
        generation=3, table=TABLE, now=NOW, spark_name="x", spark_state="RUNNING", handover=moves
    )
    built = status.build(observed)
    progressing = {c.type: c for c in built.conditions}["Progressing"]
    assert (progressing.status, progressing.reason) == ("True", "Handover")
    assert "ETHUSDT 0->1" in progressing.message
    assert {c.type: c.status for c in built.conditions}["Ready"] == "True"  # still serving
    # Written, read back by the next reconcile: the same moves with the same start times.
    again = MarketFeedStatus.model_validate(status.as_patch(built))
    assert status.pending_moves(again) == moves
    assert status.handover_since(again) == {("ETHUSDT", 1): since}
    assert status.as_patch(built)["handover"]["pending"][0] == {
        "symbol": "ETHUSDT",
        "fromShard": 0,
        "toShard": 1,
        "since": "2026-01-01T11:59:30Z",
    }
    done = status.build(status.Observed(generation=3, table=TABLE, now=NOW, spark_state="RUNNING"))
    assert done.handover is None
    assert status.pending_moves(done) == ()
