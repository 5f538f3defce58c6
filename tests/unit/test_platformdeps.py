"""The test ground's platform dependencies as objects: Kafka advertised by its Service's name,
the replay's ports, restricted pods, every object labelled as the devcluster's."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantcore.devcluster import nodeconfig, platformdeps
from quantcore.devservices import kafka as devkafka
from quantcore.devservices import s3 as devs3
from tests.chart import of_kind, render
from tests.unit.test_chart import planned_pods, selects

NS = "deps"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def security(tmp_path_factory: pytest.TempPathFactory) -> devkafka.KafkaSecurity:
    return platformdeps.kafka_security(tmp_path_factory.mktemp("cluster"), NS)


def all_objects(security: devkafka.KafkaSecurity) -> list[dict[str, Any]]:
    props = platformdeps.kafka_properties(NS, "127.0.0.1:4321", security.passwords["admin"])
    return [
        platformdeps.namespace_manifest(NS),
        *platformdeps.service_manifests(NS),
        *platformdeps.kafka_manifests(NS, "localhost/quantcore/kafka:4.1.1", props, security),
        *platformdeps.replay_manifests(NS, "ghcr.io/quantcore/quantcore:0.1.0", 100),
    ]


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_kafka_is_advertised_by_service_name_and_host_relay() -> None:
    props = properties(platformdeps.kafka_properties(NS, "127.0.0.1:4321", "pw"))
    assert props["advertised.listeners"] == (
        "CLIENT://kafka.deps.svc.cluster.local:9092,HOST://127.0.0.1:4321"
    )
    assert props["listeners"] == (
        "CLIENT://0.0.0.0:9092,HOST://0.0.0.0:9094,PROBE://127.0.0.1:9095,"
        "CONTROLLER://127.0.0.1:9093"
    )
    # Every address a client reaches is SASL_SSL; plaintext only on the pod's loopback.
    assert set(props["listener.security.protocol.map"].split(",")) == {
        "CLIENT:SASL_SSL",
        "HOST:SASL_SSL",
        "CONTROLLER:SSL",
        "PROBE:PLAINTEXT",
    }
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["super.users"] == "User:admin;User:CN=kafka,O=QuantCore"
    assert props["ssl.keystore.location"] == str(devkafka.CONTAINER_TLS_DIR / "keystore.pem")
    assert props["log.dirs"] == str(devkafka.CONTAINER_LOG_DIR)
    # Everything else is the dev services' broker.
    local = properties(devkafka.server_properties(devkafka.CONTAINER_LOG_DIR, 9092, 9093))
    same = {k for k in local if k not in {"listeners", "advertised.listeners"}}
    same -= {"listener.security.protocol.map", "inter.broker.listener.name"}
    assert {k: props[k] for k in same} == {k: local[k] for k in same}
    assert platformdeps.kafka_bootstrap(NS) == "kafka.deps.svc:9092"


def test_every_object_is_labelled_and_every_pod_is_restricted(
    security: devkafka.KafkaSecurity,
) -> None:
    pods = []
    for obj in all_objects(security):
        assert platformdeps.is_managed(obj["metadata"]["labels"]), obj["metadata"]["name"]
        if obj["kind"] in ("StatefulSet", "Deployment"):
            pods.append(obj["spec"]["template"]["spec"])
    assert len(pods) == 2
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            assert container["securityContext"] == platformdeps.RESTRICTED
            assert container["readinessProbe"]
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])
    namespace = platformdeps.namespace_manifest(NS)["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"


def test_services_select_their_pods_and_expose_the_exchanges_ports(
    security: devkafka.KafkaSecurity,
) -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in all_objects(security)}
    kafka_pod = objects[("StatefulSet", "kafka")]["spec"]["template"]["metadata"]["labels"]
    replay_pod = objects[("Deployment", "replay")]["spec"]["template"]["metadata"]["labels"]
    for name, pod in (("kafka", kafka_pod), ("kafka-headless", kafka_pod), ("replay", replay_pod)):
        selector = objects[("Service", name)]["spec"]["selector"]
        assert selector.items() <= pod.items(), name
    ports = {p["name"]: p["port"] for p in objects[("Service", "replay")]["spec"]["ports"]}
    assert ports == {"ws": 9443, "rest": 80}
    assert objects[("Service", "kafka-headless")]["spec"]["clusterIP"] == "None"
    assert objects[("StatefulSet", "kafka")]["spec"]["serviceName"] == "kafka-headless"


def test_replay_serves_the_baked_recordings_with_memory_for_its_symbols() -> None:
    (deployment,) = platformdeps.replay_manifests(NS, "img", 100)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-2:] == ["--symbols", "100"]
    assert not any(a.endswith(".gz") for a in container["args"])  # the image's recordings
    small = platformdeps.replay_manifests(NS, "img", 2)[0]["spec"]["template"]["spec"]
    small_mib = int(small["containers"][0]["resources"]["requests"]["memory"].removesuffix("Mi"))
    big_mib = int(container["resources"]["requests"]["memory"].removesuffix("Mi"))
    assert big_mib > small_mib


def test_kafka_restarts_when_its_configuration_changes(security: devkafka.KafkaSecurity) -> None:
    def config_hash(host: str) -> str:
        props = platformdeps.kafka_properties(NS, host, security.passwords["admin"])
        manifests = platformdeps.kafka_manifests(NS, "img", props, security)
        statefulset = next(m for m in manifests if m["kind"] == "StatefulSet")
        return str(statefulset["spec"]["template"]["metadata"]["annotations"])

    assert config_hash("127.0.0.1:1") != config_hash("127.0.0.1:2")
    assert config_hash("127.0.0.1:1") == config_hash("127.0.0.1:1")


def test_kafka_secrets_hold_the_config_tls_and_users_and_no_configmap_does(
    security: devkafka.KafkaSecurity,
) -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in all_objects(security)}
    assert not any(kind == "ConfigMap" for kind, _ in objects)  # the config holds a password

    def data(name: str) -> dict[str, str]:
        secret = objects[("Secret", name)]["data"]
        return {k: base64.b64decode(v).decode() for k, v in secret.items()}

    assert set(data("kafka-tls")) == {"keystore.pem", "ca.crt"}
    assert "PRIVATE KEY" in data("kafka-tls")["keystore.pem"]
    assert data("kafka-users") == security.passwords
    assert set(security.passwords) == {"admin", "feed", "stream", "operator"}
    pod = objects[("StatefulSet", "kafka")]["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["users"] == str(devkafka.CONTAINER_USERS_DIR)
    assert mounts["tls"] == str(devkafka.CONTAINER_TLS_DIR)
    probe = pod["containers"][0]["readinessProbe"]["exec"]["command"]
    assert probe == ["/opt/kafka/probe.sh", str(devkafka.CONTAINER_PROBE_PORT)]


def test_the_brokers_security_is_made_once_per_cluster(tmp_path: Path) -> None:
    first = platformdeps.kafka_security(tmp_path, NS)
    again = platformdeps.kafka_security(tmp_path, NS)
    assert again.passwords == first.passwords
    assert again.tls.ca.read_bytes() == first.tls.ca.read_bytes()
    assert (
        tmp_path / platformdeps.KAFKA_SECURITY_DIR / "passwords" / "feed"
    ).stat().st_mode & 0o077 == 0


def test_a_marketfeed_namespace_gets_its_roles_secrets_and_the_ca_alone(tmp_path: Path) -> None:
    security = platformdeps.kafka_security(tmp_path, NS)
    deps = platformdeps.PlatformDeps(
        namespace=NS,
        kafka_bootstrap="kafka.deps.svc:9092",
        kafka_host_bootstrap="127.0.0.1:1",
        replay_ws_url="ws://r",
        replay_rest_url="http://r",
        replay_host_url="http://127.0.0.1:2",
        replay_symbols=2,
        kafka_security=str(tmp_path / platformdeps.KAFKA_SECURITY_DIR),
    )
    secrets = {
        s["metadata"]["name"]: s for s in platformdeps.kafka_client_secrets(deps, "m", "local")
    }
    assert set(secrets) == {"local-kafka-feed", "local-kafka-stream", "local-kafka-ca"}

    def data(secret: dict[str, Any]) -> dict[str, str]:
        return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}

    for role in ("feed", "stream"):
        secret = secrets[f"local-kafka-{role}"]
        assert secret["type"] == "kubernetes.io/basic-auth"
        assert data(secret) == {"username": role, "password": security.passwords[role]}
    assert data(secrets["local-kafka-ca"]) == {"ca.crt": security.tls.ca.read_text()}
    operator = platformdeps.kafka_operator_secret(deps, "qc", "op-kafka")
    assert data(operator) == {"username": "operator", "password": security.passwords["operator"]}
    assert deps.kafka_auth("admin").password == security.passwords["admin"]


def test_the_local_helm_values_let_the_policies_reach_the_replay_and_kafka(
    security: devkafka.KafkaSecurity,
) -> None:
    """examples/values-local.yaml names the test ground's exchange and broker as NetworkPolicy
    peers: each rule must select those pods, in the namespace they run in, on their ports."""
    values = yaml.safe_load((ROOT / "examples" / "values-local.yaml").read_text())
    pods = {
        obj["metadata"]["name"]: obj["spec"]["template"]
        for obj in all_objects(security)
        if obj["kind"] in {"Deployment", "StatefulSet"}
    }
    for rule, workload in (("exchange", platformdeps.REPLAY), ("kafka", platformdeps.KAFKA)):
        (peer,) = values["networkPolicies"][rule]["peers"]
        namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        assert namespace == platformdeps.NAMESPACE
        template = pods[workload]
        labels = template["metadata"]["labels"]
        assert peer["podSelector"]["matchLabels"].items() <= labels.items()
        container_ports = {
            port["containerPort"] for c in template["spec"]["containers"] for port in c["ports"]
        }
        assert set(values["networkPolicies"][rule]["ports"]) <= container_ports


def test_the_local_helm_values_let_the_policies_reach_the_nodes_dns_and_s3() -> None:
    """CoreDNS and the S3 API are processes on the node: the values name its address."""
    values = yaml.safe_load((ROOT / "examples" / "values-local.yaml").read_text())
    policies = values["networkPolicies"]
    node = [{"ipBlock": {"cidr": f"{nodeconfig.NODE_IP}/32"}}]
    assert policies["dns"]["peers"] == node
    assert policies["objectStore"] == {"peers": node, "ports": [devs3.NODE_PORT]}


def test_the_brokers_policy_admits_every_marketfeed_pod_and_the_charts_operator() -> None:
    policy = platformdeps.kafka_network_policy(NS)
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "kafka", "protocol": "TCP"}]
    peers = [peer["podSelector"] for peer in rule["from"]]
    assert all(peer["namespaceSelector"] == {} for peer in rule["from"])
    for component, group in planned_pods().items():
        for pod in group:
            assert any(selects(peer, pod["labels"]) for peer in peers), component
    (deployment,) = of_kind(render(), "Deployment")
    operator = deployment["spec"]["template"]["metadata"]["labels"]
    assert any(selects(peer, operator) for peer in peers)
    assert not any(selects(peer, {"app": "anything"}) for peer in peers)
