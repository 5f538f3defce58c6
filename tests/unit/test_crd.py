"""crds/marketfeed.yaml is exactly the generator's output, and it agrees with the models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from quantcore.operator import api, crd

CRD_FILE = Path(__file__).parents[2] / "crds" / "marketfeed.yaml"


def test_file_is_the_generator_output() -> None:
    assert CRD_FILE.read_text() == crd.render(), (
        "crds/marketfeed.yaml is stale: run `python -m quantcore.operator.crd > crds/marketfeed.yaml`"
    )


def _walk(schema: dict[str, Any], model: type[BaseModel], path: str) -> None:
    fields = {f.alias or name: f for name, f in model.model_fields.items()}
    assert set(schema["properties"]) == set(fields), path
    required = {alias for alias, f in fields.items() if f.is_required()}
    assert set(schema.get("required", [])) == required, path
    for alias, f in fields.items():
        sub = schema["properties"][alias]
        annotation = f.annotation
        args = getattr(annotation, "__args__", ())
        nested = [
            a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if nested:
            target = sub["items"] if sub["type"] == "array" else sub
            _walk(target, nested[0], f"{path}.{alias}")


def test_schema_mirrors_the_models() -> None:
    version = crd.custom_resource_definition()["spec"]["versions"][0]
    props = version["schema"]["openAPIV3Schema"]["properties"]
    _walk(props["spec"], api.MarketFeedSpec, "spec")
    _walk(props["status"], api.MarketFeedStatus, "status")


def test_schema_carries_validation() -> None:
    spec = yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"
    ]["spec"]
    assert spec["properties"]["symbols"]["x-kubernetes-list-type"] == "set"
    assert spec["properties"]["symbols"]["items"]["pattern"]
    assert spec["properties"]["kafka"]["properties"]["partitions"]["maximum"] == 1000
    rules = [v["rule"] for v in spec["x-kubernetes-validations"]]
    assert any("oldSelf" in r for r in rules)
    kafka_rules = [v["rule"] for v in spec["properties"]["kafka"]["x-kubernetes-validations"]]
    assert "self.partitions >= oldSelf.partitions" in kafka_rules


def test_printer_columns() -> None:
    version = crd.custom_resource_definition()["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Ready",
        "Symbols",
        "Shards",
        "Partitions",
        "Age",
    ]
    assert version["subresources"] == {"status": {}}


def test_serving_is_secure_by_default_in_the_schema() -> None:
    spec = yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"
    ]["spec"]
    rules = {v["rule"]: v["message"] for v in spec["x-kubernetes-validations"]}
    assert "secure by default" in rules["has(self.serving.tls) || self.serving.insecure"]
    serving = spec["properties"]["serving"]
    assert serving["default"]["insecure"] is False  # an absent serving is not insecure
    assert serving["properties"]["tls"]["properties"]["clientAuth"]["enum"] == ["none", "require"]
    assert "!has(self.auth) || has(self.tls)" in [
        v["rule"] for v in serving["x-kubernetes-validations"]
    ]


def test_kafka_is_secure_by_default_in_the_schema() -> None:
    kafka = yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"
    ]["properties"]["spec"]["properties"]["kafka"]
    rules = {v["rule"]: v["message"] for v in kafka["x-kubernetes-validations"]}
    assert "secure by default" in rules["has(self.credentials) || self.insecure"]
    assert (
        "leave kafka.credentials"
        in rules["!(self.insecure && (has(self.credentials) || has(self.caSecretName)))"]
    )
    assert kafka["properties"]["insecure"]["default"] is False
    credentials = kafka["properties"]["credentials"]
    assert set(credentials["required"]) == {"feedSecretName", "streamSecretName"}
    assert kafka["properties"]["saslMechanism"]["enum"] == ["SCRAM-SHA-512", "SCRAM-SHA-256"]
