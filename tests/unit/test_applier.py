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
