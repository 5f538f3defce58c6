"""Fixtures of the MarketFeed operator's cluster tests (helpers in tests/cluster/marketfeeds.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quantcore.operator.applier import Kube
from tests.cluster.marketfeeds import install_crd


@pytest.fixture(scope="module")
def crd_installed(kubeconfig: Path) -> Path:
    """`kubeconfig`, with the MarketFeed CRD applied and Established."""
    install_crd(kubeconfig)
    return kubeconfig


@pytest.fixture
def kube(crd_installed: Path) -> Iterator[Kube]:
    k = Kube(str(crd_installed))
    yield k
    k.close()
