"""Applies a plan: server-side apply with one field manager, owner references on every
child (so deleting the MarketFeed garbage-collects them), and pruning of children the plan
no longer has (drained shards, an HPA replaced by fixed replicas).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from quantcore.operator import api, rbac
from quantcore.operator.planner import FEED_LABEL, Obj

FIELD_MANAGER = "quantcore-operator"


class KubeError(Exception):
    """An API call that failed: `status` is the HTTP status, 0 when no answer came back."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message


class Kube:
    """A thin JSON client over the kubernetes package's authenticated connection pool."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        from kubernetes import client, config

        if kubeconfig is None:
            try:
                config.load_incluster_config()
                self._api = client.ApiClient()
            except config.ConfigException:
                self._api = config.new_client_from_config(context=context)
        else:
            self._api = config.new_client_from_config(config_file=kubeconfig, context=context)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any] | None:
        """One API call; None for 404, KubeError for any other failure."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as TransportError

        headers = {"Accept": "application/json", "Content-Type": content_type}
        params = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(*params, _request_timeout=(5, 30))
            raw = response.read()
            status = response.status
        except ApiException as exc:
            status, raw = exc.status or 0, (exc.body or b"")
        except (TransportError, OSError) as exc:
            # A timeout or refused connection (a busy API server): a KubeError like any other,
            # so the reconcile reports it in status and retries soon, instead of kopf's
            # minute-long backoff for unexpected exceptions with the status left untouched.
            raise KubeError(0, f"no answer from the API server: {exc}") from exc
        if status == 404:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        if status >= 400:
            with contextlib.suppress(ValueError):  # not JSON: keep the raw text
                text = json.loads(text).get("message", text)
            raise KubeError(status, text)
        return json.loads(text) if text else {}

    def close(self) -> None:
        self._api.close()


def owner_reference(feed: api.MarketFeed) -> dict[str, Any]:
    return {
        "apiVersion": f"{api.GROUP}/{api.VERSION}",
        "kind": api.KIND,
        "name": feed.name,
        "uid": feed.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def resource_of(obj: Obj) -> rbac.Resource:
    return rbac.BY_KIND[(obj["apiVersion"], obj["kind"])]


@dataclass(frozen=True)
class Applied:
    objects: tuple[Obj, ...]  # as the server returned them (with status)
    pruned: tuple[str, ...]  # "Kind/name" deleted because the plan no longer has them


class Applier:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def apply(self, obj: Obj, feed: api.MarketFeed) -> Obj:
        body = {**obj, "metadata": {**obj["metadata"], "ownerReferences": [owner_reference(feed)]}}
        meta = body["metadata"]
        result = self.kube.request(
            "PATCH",
            resource_of(obj).path(meta["namespace"], meta["name"]),
            query=[
                ("fieldManager", FIELD_MANAGER),
                ("force", "true"),
                ("fieldValidation", "Strict"),
            ],
            body=body,
            content_type="application/apply-patch+yaml",
        )
        if result is None:  # apply creates what is missing: a 404 means the kind is unknown
            raise KubeError(
                404,
                f"the API server does not serve {obj['apiVersion']} {obj['kind']}: is its CRD installed?",
            )
        return result

    def create_if_absent(self, obj: Obj, feed: api.MarketFeed, resource: rbac.Resource) -> bool:
        """Create `obj`, owned by the feed, unless an object of its name exists: True when
        it was created. What exists is never read or changed (whoever made it)."""
        body = {**obj, "metadata": {**obj["metadata"], "ownerReferences": [owner_reference(feed)]}}
        try:
            self.kube.request(
                "POST",
                resource.path(obj["metadata"]["namespace"]),
                query=[("fieldManager", FIELD_MANAGER), ("fieldValidation", "Strict")],
                body=body,
            )
        except KubeError as exc:
            if exc.status == 409:  # AlreadyExists
                return False
            raise
        return True

    def get(self, resource: rbac.Resource, namespace: str, name: str) -> Obj | None:
        return self.kube.request("GET", resource.path(namespace, name))

    def owned(self, resource: rbac.Resource, feed: api.MarketFeed) -> list[Obj]:
        """Objects of one kind labelled for the feed and owned by it (by uid)."""
        listing = self.kube.request(
            "GET",
            resource.path(feed.namespace),
            query=[("labelSelector", f"{FEED_LABEL}={feed.name}")],
        )
        items = (listing or {}).get("items", [])
        return [
            {**item, "apiVersion": resource.api_version, "kind": resource.kind}
            for item in items
            if any(
                ref.get("uid") == feed.uid for ref in item["metadata"].get("ownerReferences", [])
            )
        ]

    def delete(self, resource: rbac.Resource, namespace: str, name: str) -> None:
        self.kube.request(
            "DELETE",
            resource.path(namespace, name),
            body={"propagationPolicy": "Background"},
        )

    def prune(
        self, feed: api.MarketFeed, desired: Iterable[Obj], kinds: Iterable[rbac.Resource]
    ) -> list[str]:
        keep = {(o["kind"], o["metadata"]["name"]) for o in desired}
        pruned = []
        for resource in kinds:
            for item in self.owned(resource, feed):
                name = item["metadata"]["name"]
                if (resource.kind, name) not in keep:
                    self.delete(resource, feed.namespace, name)
                    pruned.append(f"{resource.kind}/{name}")
        return pruned
