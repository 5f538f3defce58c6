"""Every Kubernetes resource the operator touches, with the verbs it uses: the one list the
Helm chart derives its least-privilege RBAC from (and the applier its URL paths from).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resource:
    api_version: str  # "v1" or "group/version"
    kind: str
    plural: str
    verbs: tuple[str, ...]

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def path(self, namespace: str, name: str | None = None) -> str:
        root = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        base = f"{root}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{name}" if name else base


# Children are applied (patch; an apply that creates also needs create), pruned (list,
# delete) and read for the routing table and status (get). Nothing watches them.
_CHILD = ("get", "list", "create", "patch", "delete")

CHILDREN: tuple[Resource, ...] = (
    Resource("v1", "ConfigMap", "configmaps", _CHILD),
    Resource("v1", "Service", "services", _CHILD),
    Resource("apps/v1", "Deployment", "deployments", _CHILD),
    Resource("apps/v1", "StatefulSet", "statefulsets", _CHILD),
    Resource("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", _CHILD),
    Resource("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", _CHILD),
    Resource("sparkoperator.k8s.io/v1beta2", "SparkApplication", "sparkapplications", _CHILD),
    Resource("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors", _CHILD),
)

# The managed Redis's passwords: created once when absent (a 409 means it exists and is left
# alone). Never read, listed, patched or deleted: the operator cannot see any Secret's data,
# and its own goes with the MarketFeed by its owner reference.
SECRET = Resource("v1", "Secret", "secrets", ("create",))

# The operator's own resource: kopf watches it, patches annotations/finalizers and status.
OWN: tuple[Resource, ...] = (
    Resource(
        "quantcore.io/v1alpha1", "MarketFeed", "marketfeeds", ("get", "list", "watch", "patch")
    ),
    Resource("quantcore.io/v1alpha1", "MarketFeed", "marketfeeds/status", ("get", "patch")),
    # Owner references with blockOwnerDeletion need this where the admission plugin is on.
    Resource("quantcore.io/v1alpha1", "MarketFeed", "marketfeeds/finalizers", ("update",)),
    # kopf posts k8s events for handler outcomes.
    Resource("v1", "Event", "events", ("create",)),
    Resource("events.k8s.io/v1", "Event", "events", ("create",)),
    # kopf discovers its resources.
    Resource(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        ("get", "list", "watch"),
    ),
    Resource("v1", "Namespace", "namespaces", ("get", "list", "watch")),
)

BY_KIND: dict[tuple[str, str], Resource] = {(r.api_version, r.kind): r for r in CHILDREN}
# Everything the operator may touch, in the order the rules list it.
ALL: tuple[Resource, ...] = (*CHILDREN, SECRET, *OWN)


def rules() -> list[dict[str, object]]:
    """RBAC PolicyRules (group, resource, verbs) for a Role/ClusterRole."""
    return [{"apiGroups": [r.group], "resources": [r.plural], "verbs": list(r.verbs)} for r in ALL]
