"""The test ground's platform dependencies as objects: Kafka advertised by its Service's name,
the replay's ports, restricted pods, every object labelled as the devcluster's."""

from __future__ import annotations

from typing import Any

from quantcore.devcluster import platformdeps
from quantcore.devservices import kafka as devkafka

NS = "deps"


def all_objects() -> list[dict[str, Any]]:
    props = platformdeps.kafka_properties(NS, "127.0.0.1:4321")
    return [
        platformdeps.namespace_manifest(NS),
        *platformdeps.service_manifests(NS),
        *platformdeps.kafka_manifests(NS, "localhost/quantcore/kafka:4.1.1", props),
        *platformdeps.replay_manifests(NS, "ghcr.io/quantcore/quantcore:0.1.0", 100),
    ]


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_kafka_is_advertised_by_service_name_and_host_relay() -> None:
    props = properties(platformdeps.kafka_properties(NS, "127.0.0.1:4321"))
    assert props["advertised.listeners"] == (
        "PLAINTEXT://kafka.deps.svc.cluster.local:9092,HOST://127.0.0.1:4321"
    )
    assert props["listeners"] == (
        "PLAINTEXT://0.0.0.0:9092,HOST://0.0.0.0:9094,CONTROLLER://127.0.0.1:9093"
    )
    assert set(props["listener.security.protocol.map"].split(",")) == {
        "PLAINTEXT:PLAINTEXT",
        "HOST:PLAINTEXT",
        "CONTROLLER:PLAINTEXT",
    }
    assert props["log.dirs"] == str(devkafka.CONTAINER_LOG_DIR)
    # Everything else is the dev services' broker.
    local = properties(devkafka.server_properties(devkafka.CONTAINER_LOG_DIR, 9092, 9093))
    same = {k for k in local if k not in {"listeners", "advertised.listeners"}}
    same -= {"listener.security.protocol.map"}
    assert {k: props[k] for k in same} == {k: local[k] for k in same}
    assert platformdeps.kafka_bootstrap(NS) == "kafka.deps.svc:9092"


def test_every_object_is_labelled_and_every_pod_is_restricted() -> None:
    pods = []
    for obj in all_objects():
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


def test_services_select_their_pods_and_expose_the_exchanges_ports() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in all_objects()}
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


def test_kafka_restarts_when_its_configuration_changes() -> None:
    def config_hash(host: str) -> str:
        props = platformdeps.kafka_properties(NS, host)
        statefulset = platformdeps.kafka_manifests(NS, "img", props)[1]
        return str(statefulset["spec"]["template"]["metadata"]["annotations"])

    assert config_hash("127.0.0.1:1") != config_hash("127.0.0.1:2")
    assert config_hash("127.0.0.1:1") == config_hash("127.0.0.1:1")
