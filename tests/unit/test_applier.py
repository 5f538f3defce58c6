"""The applier's client turns a transport failure into a KubeError (status 0), so the
reconcile reports it in status instead of failing outside its error handling."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from quantcore.operator.applier import Kube, KubeError


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_answer_from_the_api_server_is_a_kube_error(tmp_path: Path) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{closed_port()}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    kube = Kube(str(path))
    try:
        with pytest.raises(KubeError) as failed:
            kube.request("GET", "/api/v1/namespaces/default/configmaps/x")
    finally:
        kube.close()
    assert failed.value.status == 0
    assert "no answer from the API server" in str(failed.value)
    assert not str(failed.value).startswith("HTTP")


class _RecordingKube:
    """A stand-in for Kube that answers POSTs with `status` (pure logic under test)."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.calls: list[tuple[str, str, object]] = []

    def request(self, method: str, path: str, **kwargs: object) -> dict[str, object]:
        self.calls.append((method, path, kwargs.get("body")))
        if self.status >= 400:
            raise KubeError(self.status, 'secrets "x" already exists')
        return {}


@pytest.mark.parametrize(("status", "created"), [(201, True), (409, False)])
def test_the_redis_credentials_secret_is_created_once_and_never_overwritten(
    status: int, created: bool
) -> None:
    from quantcore.operator import planner, rbac
    from quantcore.operator.applier import Applier
    from quantcore.operator.reconcile import ensure_redis_credentials

    kube = _RecordingKube(status)
    feed = planner.sample_feed()
    made = ensure_redis_credentials(Applier(kube), feed)  # type: ignore[arg-type]
    ((method, path, body),) = kube.calls  # one POST; never a GET, PATCH or PUT
    assert method == "POST"
    assert path == rbac.SECRET.path("default")
    assert isinstance(body, dict)
    assert body["metadata"]["name"] == "demo-redis-credentials"
    assert body["metadata"]["ownerReferences"][0]["kind"] == "MarketFeed"
    passwords = body["stringData"]
    assert set(passwords) == {"relay-password", "serve-password"}
    assert len(set(passwords.values())) == 2
    assert all(len(p) >= 32 for p in passwords.values())
    assert made == created


@pytest.mark.parametrize(
    "redis",
    [
        {"insecure": True},
        {"mode": "external", "url": "rediss://r:6379/0", "credentialsSecretName": "theirs"},
    ],
)
def test_no_secret_is_made_for_an_insecure_or_external_redis(redis: dict[str, object]) -> None:
    from quantcore.operator import planner
    from quantcore.operator.applier import Applier
    from quantcore.operator.reconcile import ensure_redis_credentials

    kube = _RecordingKube(201)
    feed = planner.sample_feed(redis=redis)
    assert not ensure_redis_credentials(Applier(kube), feed)  # type: ignore[arg-type]
    assert kube.calls == []
