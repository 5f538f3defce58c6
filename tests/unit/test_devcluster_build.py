"""The test ground's pure parts: the wrapper go.mod recipe, version stamps and kubeconfigs."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantcore.devcluster import binaries, kubeconfig, versions
from quantcore.devcluster.certs import KeyPair

KUBERNETES_GOMOD = """module k8s.io/kubernetes

go 1.26.0

require (
\tgithub.com/spf13/cobra v1.10.2
\tk8s.io/api v0.0.0
\tk8s.io/apiserver v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apiserver => ./staging/src/k8s.io/apiserver
\tk8s.io/kube-aggregator => ./staging/src/k8s.io/kube-aggregator
)
"""


def test_staging_modules_are_read_from_the_replace_block() -> None:
    assert binaries.staging_modules(KUBERNETES_GOMOD) == [
        "k8s.io/api",
        "k8s.io/apiserver",
        "k8s.io/kube-aggregator",
    ]
    assert binaries.go_directive(KUBERNETES_GOMOD) == "1.26.0"


def test_a_go_mod_without_staging_replaces_is_an_error() -> None:
    with pytest.raises(binaries.BuildError):
        binaries.staging_modules("module example.com/x\n\ngo 1.26\n")


def test_staging_version_matches_the_kubernetes_tag() -> None:
    assert versions.staging_version("v1.36.3") == "v0.36.3"
    with pytest.raises(ValueError, match="unexpected"):
        versions.staging_version("v2.0.0")


def test_wrapper_gomod_replaces_each_staging_module_with_its_release() -> None:
    text = binaries.wrapper_gomod(
        go="1.26.0",
        requires={"k8s.io/kubernetes": "v1.36.3"},
        replaces=dict.fromkeys(binaries.staging_modules(KUBERNETES_GOMOD), "v0.36.3"),
        tools=["k8s.io/kubernetes/cmd/kube-apiserver"],
    )
    assert "go 1.26.0\n" in text
    assert "\tk8s.io/kubernetes v1.36.3\n" in text
    assert "\tk8s.io/api => k8s.io/api v0.36.3\n" in text
    assert "\tk8s.io/kube-aggregator => k8s.io/kube-aggregator v0.36.3\n" in text
    assert "tool k8s.io/kubernetes/cmd/kube-apiserver\n" in text


def test_ldflags_stamp_the_release_version() -> None:
    flags = binaries.kubernetes_ldflags("v1.36.3", "2026-01-01T00:00:00Z")
    assert "-X k8s.io/component-base/version.gitVersion=v1.36.3" in flags
    assert "-X k8s.io/client-go/pkg/version.gitMinor=36" in flags


def test_kubeconfig_points_at_absolute_cert_paths(tmp_path: Path) -> None:
    config = kubeconfig.render(
        server="https://127.0.0.1:6443",
        ca_cert=tmp_path / "ca.crt",
        user="admin",
        client=KeyPair(tmp_path / "admin.crt", tmp_path / "admin.key"),
    )
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:6443"
    assert Path(cluster["certificate-authority"]).is_absolute()
    assert config["current-context"] == config["contexts"][0]["name"]
    path = kubeconfig.write(tmp_path / "kc" / "config", config)
    assert path.stat().st_mode & 0o077 == 0
