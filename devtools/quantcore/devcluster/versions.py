"""Pinned versions of everything the test ground builds or fetches, and where each is cached.

Every artifact lives under $QUANTCORE_CACHE (default ~/.cache/quantcore) in a directory
named by its version, so bumping a pin builds the new one beside the old.
"""

from __future__ import annotations

from pathlib import Path

# One cache for every pin, claimed as quantcore's own (see quantcore.ownership).
from quantcore.devservices.cache import cache_root

# One supported Kubernetes release; the staging modules (k8s.io/api, ...) are published as
# v0.<minor>.<patch> for every v1.<minor>.<patch> tag of k8s.io/kubernetes.
KUBERNETES = "v1.36.3"
ETCD = "v3.6.8"  # the etcd client version k8s.io/kubernetes v1.36.3 itself requires
HELM = "v3.22.0"
CONTAINERD = "v2.4.2"  # v2: the kubelet marks containerd 1.x support for removal in 1.37
COREDNS = "v1.15.0"
# The node's NetworkPolicy engine: kube-router's firewall alone (iptables and ipset), run as a
# node process. v2.1.0 is the only release the module registry serves; advisories are filed
# against it, which matters little for a test ground with no route out, but bump it as soon as
# a newer one is served. kube-network-policies (sigs.k8s.io) was the first choice and fails
# here: it queues packets with nftables' queue expression, which this kernel lacks.
KUBE_ROUTER = "v2.1.0"
SPARK_OPERATOR = "v2.4.0"  # github.com/kubeflow/spark-operator/v2
PROMETHEUS_OPERATOR = "v0.85.0"  # github.com/prometheus-operator/prometheus-operator


def staging_version(kubernetes: str = KUBERNETES) -> str:
    """v1.36.3 -> v0.36.3: the tag of the k8s.io/* staging modules cut from the same commit."""
    major, minor, patch = kubernetes.removeprefix("v").split(".")
    if major != "1":
        raise ValueError(f"unexpected Kubernetes version {kubernetes}")
    return f"v0.{minor}.{patch}"


def kubernetes_dir() -> Path:
    return cache_root() / "k8s" / KUBERNETES


def etcd_dir() -> Path:
    return cache_root() / f"etcd-{ETCD}"


def helm_dir() -> Path:
    # Shared with the chart's lint targets, which install helm into the same place.
    return cache_root() / f"helm-{HELM}"


def containerd_dir() -> Path:
    return cache_root() / f"containerd-{CONTAINERD}"


def coredns_dir() -> Path:
    return cache_root() / f"coredns-{COREDNS}"


def kube_router_dir() -> Path:
    return cache_root() / f"kube-router-{KUBE_ROUTER}"


def crd_dir() -> Path:
    return (
        cache_root()
        / "crds"
        / f"spark-operator-{SPARK_OPERATOR}_prometheus-operator-{PROMETHEUS_OPERATOR}"
    )
