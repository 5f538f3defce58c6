"""The reconcile refuses to touch a MarketFeed that does not say how to serve (admitted before
the CRD demanded TLS or `serving.insecure`): a Degraded status with reason ServingInsecure,
and no write at all. The Kube here is a stub that records requests."""

from __future__ import annotations

from typing import Any

import pytest

from quantcore.operator.planner import sample_feed
from quantcore.operator.reconcile import RetryLater, reconcile


class RecordingKube:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def request(self, method: str, path: str, **_: Any) -> Any:
        self.requests.append((method, path))
        return None  # nothing exists yet


def body_without_serving_security() -> dict[str, Any]:
    spec = sample_feed().spec.model_dump(by_alias=True, exclude_none=True)
    spec["serving"] = {"port": 50051}
    return {
        "metadata": {"name": "demo", "namespace": "default", "uid": "u", "generation": 3},
        "spec": spec,
    }


def test_a_feed_without_tls_or_explicit_insecure_is_not_reconciled() -> None:
    kube = RecordingKube()
    with pytest.raises(RetryLater) as info:
        reconcile(kube, body_without_serving_security())  # type: ignore[arg-type]
    conditions = {c["type"]: c for c in info.value.status_patch["conditions"]}
    assert conditions["Degraded"]["status"] == "True"
    assert conditions["Degraded"]["reason"] == "ServingInsecure"
    assert "spec.serving.tls.secretName" in conditions["Degraded"]["message"]
    assert conditions["Ready"]["status"] == "False"
    # Only the routing table was read; nothing was written.
    assert [m for m, _ in kube.requests] == ["GET"]


def test_a_feed_without_kafka_credentials_or_explicit_insecure_is_not_reconciled() -> None:
    # Admitted before the CRD demanded spec.kafka.credentials or kafka.insecure.
    body = body_without_serving_security()
    body["spec"]["serving"] = sample_feed().spec.serving.model_dump(by_alias=True)
    body["spec"]["kafka"] = {"bootstrap": "kafka:9092"}
    kube = RecordingKube()
    with pytest.raises(RetryLater) as info:
        reconcile(kube, body)  # type: ignore[arg-type]
    conditions = {c["type"]: c for c in info.value.status_patch["conditions"]}
    assert conditions["Degraded"]["reason"] == "KafkaInsecure"
    assert "spec.kafka.credentials" in conditions["Degraded"]["message"]
    assert [m for m, _ in kube.requests] == ["GET"]
