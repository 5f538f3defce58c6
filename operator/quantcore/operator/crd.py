"""Generates the MarketFeed CustomResourceDefinition from the pydantic models in api.py.

`python -m quantcore.operator.crd > crds/marketfeed.yaml` writes it; a unit test proves the
file equals this output, so the models and the API server's schema cannot drift apart.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from pydantic import BaseModel

from quantcore.operator import api

# JSON-schema keys that carry over to a Kubernetes structural schema unchanged.
_KEPT = (
    "description",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "enum",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
)


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One pydantic JSON-schema node -> one Kubernetes structural-schema node."""
    if "$ref" in node:
        resolved = dict(defs[node["$ref"].split("/")[-1]])
        resolved.update({k: v for k, v in node.items() if k != "$ref"})
        return _structural(resolved, defs)
    if "anyOf" in node:  # `X | None`: optional in Kubernetes is simply "absent"
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express union {node['anyOf']} in a structural schema")
        merged = {**options[0], **{k: v for k, v in node.items() if k != "anyOf"}}
        return _structural(merged, defs)
    out: dict[str, Any] = {}
    if "enum" in node or "const" in node:
        values = node.get("enum", [node.get("const")])
        out["type"] = "integer" if all(isinstance(v, int) for v in values) else "string"
    elif "type" in node:
        out["type"] = node["type"]
    for key in _KEPT:
        if key in node:
            out[key] = node[key]
    if "const" in node:
        out["enum"] = [node["const"]]
    values = _map_values(node)
    if out.get("type") == "object" and values is not None:
        # A map: the key rule, if any, is a CEL rule on the field (no propertyNames here).
        out["additionalProperties"] = _structural(values, defs)
    elif out.get("type") == "object":
        props = node.get("properties", {})
        out["properties"] = {name: _structural(p, defs) for name, p in props.items()}
        if node.get("required"):
            out["required"] = sorted(node["required"])
    if out.get("type") == "array":
        out["items"] = _structural(node["items"], defs)
        items = out["items"]
        if "x-kubernetes-list-type" in out:
            pass  # the model said how
        elif items.get("type") == "string":  # symbol lists
            out["x-kubernetes-list-type"] = "set"  # the API server rejects duplicates
        elif "type" in items.get("required", []):  # conditions: one entry per type
            out["x-kubernetes-list-type"] = "map"
            out["x-kubernetes-list-map-keys"] = ["type"]
    if "default" in node and node["default"] is not None:
        # Object defaults are written out in full: the API server checks a default against
        # the CEL rules before it fills nested defaults.
        out["default"] = _without_none(node["default"])
    return out


def _map_values(node: dict[str, Any]) -> dict[str, Any] | None:
    """The value schema of a `dict[K, V]` field (pydantic writes patternProperties when K
    has a pattern), or None for an object with named properties."""
    if isinstance(node.get("additionalProperties"), dict):
        values: dict[str, Any] = node["additionalProperties"]
        return values
    patterns = node.get("patternProperties")
    if patterns:
        if len(patterns) != 1:
            raise ValueError(f"cannot express {patterns} in a structural schema")
        return dict(next(iter(patterns.values())))
    return None


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    return value


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema = _structural(raw, raw.get("$defs", {}))
    schema.pop("title", None)
    return schema


def _ready_column() -> dict[str, Any]:
    return {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    }


def custom_resource_definition() -> dict[str, Any]:
    spec_schema = schema_of(api.MarketFeedSpec)
    status_schema = schema_of(api.MarketFeedStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": ["quantcore"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        _ready_column(),
                        {"name": "Symbols", "type": "integer", "jsonPath": ".status.symbols"},
                        {"name": "Shards", "type": "integer", "jsonPath": ".status.shards"},
                        {
                            "name": "Partitions",
                            "type": "integer",
                            "jsonPath": ".status.partitions",
                        },
                        {
                            "name": "Age",
                            "type": "date",
                            "jsonPath": ".metadata.creationTimestamp",
                        },
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A live, sharded market-data pipeline.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    header = "# Generated by `python -m quantcore.operator.crd` from api.py. Do not edit.\n"
    return header + yaml.safe_dump(custom_resource_definition(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
