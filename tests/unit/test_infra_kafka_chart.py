"""infra/charts/kafka-cluster, rendered by the real helm: the in-cluster Kafka that infra/
installs must match the bootstrap address it hands the MarketFeed, and size its replication
to the number of nodes."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "infra" / "charts" / "kafka-cluster"


@pytest.fixture(scope="session")
def helm() -> Path:
    from quantcore.devcluster import binaries

    return binaries.ensure_helm()


def render(helm: Path, **values: Any) -> dict[str, dict[str, Any]]:
    """The chart's objects by kind, rendered as infra/kafka.tf installs it."""
    rendered = subprocess.run(
        [str(helm), "template", "kafka-cluster", str(CHART), "--namespace", "kafka"]
        + [
            arg
            for key, value in values.items()
            for arg in ("--set-json", f"{key}={json.dumps(value)}")
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    return {doc["kind"]: doc for doc in yaml.safe_load_all(rendered.stdout) if doc}


def test_one_node_replicates_once(helm: Path) -> None:
    kafka = render(helm, nodes=1)["Kafka"]
    config = kafka["spec"]["kafka"]["config"]

    assert config["default.replication.factor"] == 1
    assert config["min.insync.replicas"] == 1
    assert config["offsets.topic.replication.factor"] == 1


def test_three_nodes_survive_one_loss(helm: Path) -> None:
    objects = render(helm, nodes=3)
    config = objects["Kafka"]["spec"]["kafka"]["config"]

    assert objects["KafkaNodePool"]["spec"]["replicas"] == 3
    assert config["default.replication.factor"] == 3
    assert config["min.insync.replicas"] == 2
    assert config["transaction.state.log.min.isr"] == 2


def test_the_bootstrap_infra_hands_out_is_what_strimzi_serves(helm: Path) -> None:
    # modules/chart-values hands out <cluster>-kafka-bootstrap.<namespace>.svc:9092; Strimzi
    # names the bootstrap Service after the Kafka resource and serves the listener's port.
    module = (ROOT / "infra" / "modules" / "chart-values" / "main.tf").read_text()
    assert (
        '"${var.in_cluster_kafka.cluster}-kafka-bootstrap.${var.in_cluster_kafka.namespace}.svc:9092"'
        in module
    )
    kafka = render(helm, cluster="quantcore")["Kafka"]

    assert kafka["metadata"]["name"] == "quantcore"
    assert [(lis["port"], lis["tls"]) for lis in kafka["spec"]["kafka"]["listeners"]] == [
        (9092, True)
    ]
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"


def test_nodes_and_volumes(helm: Path) -> None:
    objects = render(helm, nodeSelector={"quantcore.io/pool": "platform"})
    pool = objects["KafkaNodePool"]["spec"]
    storage = objects["StorageClass"]
    terms = pool["template"]["pod"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]

    assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "quantcore.io/pool", "operator": "In", "values": ["platform"]}
    ]
    # The log of record: encrypted, and kept when its claim or the cluster goes away.
    assert storage["parameters"] == {"type": "gp3", "encrypted": "true"}
    assert storage["reclaimPolicy"] == "Retain"
    assert pool["storage"]["volumes"][0]["class"] == storage["metadata"]["name"]
    assert pool["storage"]["volumes"][0]["deleteClaim"] is False


def render_all(helm: Path) -> list[dict[str, Any]]:
    rendered = subprocess.run(
        [str(helm), "template", "kafka-cluster", str(CHART), "--namespace", "kafka"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def test_the_listener_is_tls_and_scram_and_acls_are_enforced(helm: Path) -> None:
    kafka = render(helm)["Kafka"]["spec"]
    (listener,) = kafka["kafka"]["listeners"]
    assert listener["tls"] is True
    assert listener["authentication"] == {"type": "scram-sha-512"}
    assert kafka["kafka"]["authorization"] == {"type": "simple"}
    # The User Operator makes the users; no Topic Operator (the QuantCore operator's job).
    assert kafka["entityOperator"] == {"userOperator": {}}


def test_users_file_is_the_generators_output() -> None:
    spec = importlib.util.spec_from_file_location(
        "kafka_users", ROOT / "infra" / "charts" / "kafka_users.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    on_disk = (CHART / "files" / "users.yaml").read_text()
    assert on_disk == module.render(), (
        "infra/charts/kafka-cluster/files/users.yaml is stale:"
        " python infra/charts/kafka_users.py > infra/charts/kafka-cluster/files/users.yaml"
    )


def test_each_role_is_a_kafka_user_with_exactly_its_acls(helm: Path) -> None:
    from quantcore import kafkaacl
    from quantcore.events import Topics

    users = {d["metadata"]["name"]: d for d in render_all(helm) if d["kind"] == "KafkaUser"}
    assert set(users) == set(kafkaacl.PIPELINE_USERS)
    patterns = {"literal": kafkaacl.LITERAL, "prefix": kafkaacl.PREFIXED}
    kinds = {"topic": kafkaacl.TOPIC, "group": kafkaacl.GROUP, "cluster": kafkaacl.CLUSTER_RESOURCE}
    rendered = set()
    for name, user in users.items():
        assert user["metadata"]["labels"] == {"strimzi.io/cluster": "quantcore"}
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
        for acl in user["spec"]["authorization"]["acls"]:
            resource = acl["resource"]
            for operation in acl["operations"]:
                rendered.add(
                    kafkaacl.Acl(
                        name,
                        kinds[resource["type"]],
                        resource.get("name", kafkaacl.CLUSTER),
                        patterns[resource.get("patternType", "literal")],
                        "_".join(w.upper() for w in re.findall(r"[A-Z][a-z]*", operation)),
                    )
                )
    assert rendered == set(kafkaacl.acls(Topics()))
