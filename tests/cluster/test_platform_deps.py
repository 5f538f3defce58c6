"""The platform's dependencies on the test ground (quantcore.devcluster.platformdeps): Kafka
and the replay exchange in their namespace, reached from the host and from other namespaces,
and the Redis image run the way the operator runs it."""

from __future__ import annotations

import base64
import json
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kubernetes import client, utils

from quantcore.devcluster import cluster, images, platformdeps
from quantcore.devservices import tlscerts
from quantcore.events import Topics
from quantcore.operator import planner
from tests.cluster import pods
from tests.fixtures.cluster import api_client, eventually

pytestmark = pytest.mark.cluster

SYMBOLS = platformdeps.DEFAULT_REPLAY_SYMBOLS


@pytest.fixture(scope="module")
def api(node_cluster: cluster.Cluster) -> Iterator[client.ApiClient]:
    with api_client(node_cluster.kubeconfig) as api:
        yield api


@pytest.fixture
def other_namespace(api: client.ApiClient) -> Iterator[str]:
    yield from pods.namespace(
        api,
        labels={
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        },
    )


def test_a_host_client_produces_and_consumes_on_the_broker(
    platform_deps: platformdeps.PlatformDeps,
) -> None:
    topic = f"t-host-{uuid.uuid4().hex[:8]}"
    value = uuid.uuid4().bytes
    admin = platform_deps.kafka_host_config("admin")
    produced = _produce(admin, topic, value)
    assert produced.error() is None
    assert _consume(admin, topic) == [value]


def test_the_broker_refuses_plaintext_and_a_user_without_an_acl(
    platform_deps: platformdeps.PlatformDeps,
) -> None:
    topic = f"t-refused-{uuid.uuid4().hex[:8]}"
    plaintext = {"bootstrap.servers": platform_deps.kafka_host_bootstrap}
    error = _delivery_error(plaintext, topic)
    assert error is not None
    assert error.code() == KafkaError._MSG_TIMED_OUT  # never a TLS handshake, never an answer
    error = _delivery_error(platform_deps.kafka_host_config("feed"), topic)  # no ACL for it
    assert error is not None
    assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_a_pod_in_another_namespace_reaches_kafka_by_its_service_name(
    node_cluster: cluster.Cluster,
    api: client.ApiClient,
    other_namespace: str,
    built_images: dict[str, images.BuiltImage],
    platform_deps: platformdeps.PlatformDeps,
) -> None:
    # A feed's topics with its users' ACLs, and the Secrets a MarketFeed there would name.
    feed = Topics.with_prefix(f"t-pod-{uuid.uuid4().hex[:8]}")
    topic = feed.raw
    platformdeps.grant_kafka(platform_deps, feed)
    admin = AdminClient(platform_deps.kafka_host_config("admin"))
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    for secret in platformdeps.kafka_client_secrets(platform_deps, other_namespace, "client"):
        pods.create(api, other_namespace, secret)
    # The feed user over SASL_SSL, as a shard runs (quantcore.kafkaauth from its environment).
    script = (
        "from confluent_kafka import Producer; from confluent_kafka.admin import AdminClient\n"
        "from quantcore.kafkaauth import KafkaAuth\n"
        f"config = {{**KafkaAuth.from_env().client_config(), 'bootstrap.servers':"
        f" {platform_deps.kafka_bootstrap!r}}}\n"
        "metadata = AdminClient(config).list_topics(timeout=30)\n"
        "print('brokers', *sorted(f'{b.host}:{b.port}' for b in metadata.brokers.values()))\n"
        "p = Producer(config)\n"
        f"p.produce({topic!r}, b'from-a-pod')\n"
        "print('unsent', p.flush(30))\n"
    )
    pod = pods.pod("client", built_images["runtime"].ref, ["python3", "-c", script])
    # The broker's NetworkPolicy admits MarketFeed pods, the operator and labelled tools.
    pod["metadata"]["labels"] = {platformdeps.KAFKA_CLIENT_LABEL: "true"}
    (container,) = pod["spec"]["containers"]
    container["env"] = [
        {"name": "QUANTCORE_KAFKA_CA_FILE", "value": "/etc/kafka-ca/ca.crt"},
        *(
            {"name": name, "valueFrom": {"secretKeyRef": {"name": "client-kafka-feed", "key": key}}}
            for name, key in (
                ("QUANTCORE_KAFKA_USERNAME", "username"),
                ("QUANTCORE_KAFKA_PASSWORD", "password"),
            )
        ),
    ]
    container.setdefault("volumeMounts", []).append(
        {"name": "kafka-ca", "mountPath": "/etc/kafka-ca", "readOnly": True}
    )
    pod["spec"]["volumes"].append({"name": "kafka-ca", "secret": {"secretName": "client-kafka-ca"}})
    pods.create(api, other_namespace, pod)
    pods.wait_phase(client.CoreV1Api(api), other_namespace, "client", "Succeeded")
    logs = pods.kubectl(node_cluster.kubeconfig, "logs", "-n", other_namespace, "client")
    # The broker advertises its Service's name, and the producer really connected to it.
    assert f"brokers kafka.{platform_deps.namespace}.svc.cluster.local:9092" in logs
    assert "unsent 0" in logs
    assert _consume(platform_deps.kafka_host_config("admin"), topic) == [b"from-a-pod"]


def test_a_pod_the_brokers_policy_does_not_name_is_refused(
    node_cluster: cluster.Cluster,
    api: client.ApiClient,
    other_namespace: str,
    built_images: dict[str, images.BuiltImage],
    platform_deps: platformdeps.PlatformDeps,
) -> None:
    """The node's policy engine enforces the broker's NetworkPolicy: an unlabelled pod's
    connection to the client port is rejected, while a labelled one's is answered."""
    host, port = platform_deps.kafka_bootstrap.rsplit(":", 1)
    # A new pod's address reaches the engine's sets a moment after it starts, so the tool,
    # which the policy admits, tries until then; the stranger's first answer is final.
    script = (
        "import socket, sys, time\n"
        "deadline = time.monotonic() + (60 if sys.argv[1] == 'retry' else 0)\n"
        "while True:\n"
        "    try:\n"
        f"        socket.create_connection(({host!r}, {port}), timeout=10).close()\n"
        "        print('connected')\n"
        "        break\n"
        "    except ConnectionRefusedError:\n"
        "        if time.monotonic() >= deadline:\n"
        "            print('refused')\n"
        "            break\n"
        "        time.sleep(0.2)\n"
    )
    runtime = built_images["runtime"].ref
    for name, labels, mode in (
        ("stranger", {}, "once"),
        ("tool", {platformdeps.KAFKA_CLIENT_LABEL: "true"}, "retry"),
    ):
        pod = pods.pod(name, runtime, ["python3", "-c", script, mode])
        pod["metadata"]["labels"] = labels
        pods.create(api, other_namespace, pod)
    core = client.CoreV1Api(api)
    outcome = {}
    for name in ("stranger", "tool"):
        pods.wait_phase(core, other_namespace, name, "Succeeded")
        outcome[name] = pods.kubectl(
            node_cluster.kubeconfig, "logs", "-n", other_namespace, name
        ).strip()
    assert outcome == {"stranger": "refused", "tool": "connected"}


def test_the_replay_serves_n_symbols_depth_and_a_changeable_ranking(
    platform_deps: platformdeps.PlatformDeps,
) -> None:
    rest = platform_deps.replay_host_url
    info = _get(f"{rest}/api/v3/exchangeInfo")
    names = {s["symbol"] for s in info["symbols"]}
    assert len(names) == SYMBOLS == platform_deps.replay_symbols
    last_copy = f"ETH{SYMBOLS // 2 - 1}USDT"
    assert {"BTCUSDT", "ETHUSDT", last_copy} <= names
    book = _depth_after_subscribing(rest, last_copy)
    assert book["lastUpdateId"] > 0
    assert book["bids"]
    assert book["asks"]
    assert float(book["bids"][0][0]) < float(book["asks"][0][0])

    def top() -> str:
        tickers = _get(f"{rest}/api/v3/ticker/24hr")
        return str(max(tickers, key=lambda t: (float(t["quoteVolume"]), t["symbol"]))["symbol"])

    assert top() != last_copy
    _post(f"{rest}/_replay/ticker", {last_copy: 1e13})
    try:
        assert top() == last_copy
    finally:
        urllib.request.urlopen(
            urllib.request.Request(f"{rest}/_replay/ticker", method="DELETE"), timeout=10
        ).read()
    assert top() != last_copy


def test_the_redis_image_runs_as_the_operator_runs_it_and_answers_ping(
    node_cluster: cluster.Cluster,
    api: client.ApiClient,
    other_namespace: str,
    built_images: dict[str, images.BuiltImage],
) -> None:
    # The insecure opt-out: the image's own settings, which only an open server shows (CONFIG).
    feed = planner.sample_feed(
        namespace=other_namespace, redis={"image": images.REDIS_REF, "insecure": True}
    )
    statefulset, service = planner.redis_objects(feed, 2)
    args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--maxmemory" in args
    assert "--save" in args
    for manifest in (statefulset, service):
        utils.create_from_dict(api, manifest, namespace=other_namespace)
    apps = client.AppsV1Api(api)
    name = statefulset["metadata"]["name"]

    def ready() -> bool:
        status: Any = apps.read_namespaced_stateful_set_status(name, other_namespace).status
        return status.ready_replicas == 1

    eventually(ready, f"StatefulSet {name} Ready", timeout=120)
    maxmemory = args[args.index("--maxmemory") + 1]
    host = f"{service['metadata']['name']}.{other_namespace}.svc"
    script = (
        "import redis\n"
        f"r = redis.Redis(host={host!r}, port=6379, socket_timeout=10)\n"
        "print('ping', r.ping())\n"
        "print('maxmemory', r.config_get('maxmemory')['maxmemory'])\n"
        "print('save', repr(r.config_get('save')['save']))\n"
    )
    pods.create(
        api,
        other_namespace,
        pods.pod("redis-client", built_images["runtime"].ref, ["python3", "-c", script]),
    )
    pods.wait_phase(client.CoreV1Api(api), other_namespace, "redis-client", "Succeeded")
    logs = pods.kubectl(node_cluster.kubeconfig, "logs", "-n", other_namespace, "redis-client")
    assert "ping True" in logs
    assert f"maxmemory {int(maxmemory.removesuffix('mb')) * 2**20}" in logs
    assert "save ''" in logs
    who = pods.kubectl(
        node_cluster.kubeconfig, "exec", "-n", other_namespace, f"{name}-0", "--", "id", "-u"
    )
    assert who.strip() == "999"


def test_the_redis_image_serves_tls_and_the_acl_users_as_the_operator_runs_it(
    node_cluster: cluster.Cluster,
    api: client.ApiClient,
    other_namespace: str,
    built_images: dict[str, images.BuiltImage],
) -> None:
    runtime = built_images["runtime"].ref  # the aclfile's init container runs quantcore
    feed = planner.sample_feed(
        name="sec", namespace=other_namespace, image=runtime, redis={"image": images.REDIS_REF}
    )
    tls_name = planner.redis_tls_secret_name(feed)
    assert tls_name is not None
    tls = tlscerts.kubernetes_secret(tls_name, other_namespace, [planner.redis_host(feed)])
    passwords = {"relay": uuid.uuid4().hex, "serve": uuid.uuid4().hex}
    credentials = planner.redis_credentials_secret(feed, passwords)
    statefulset, service = planner.redis_objects(feed, 2)
    for manifest in (tls, credentials, statefulset, service):
        utils.create_from_dict(api, manifest, namespace=other_namespace)
    apps = client.AppsV1Api(api)
    name = statefulset["metadata"]["name"]

    def ready() -> bool:
        status: Any = apps.read_namespaced_stateful_set_status(name, other_namespace).status
        return status.ready_replicas == 1

    eventually(ready, f"StatefulSet {name} Ready", timeout=180)
    ca_pem = base64.b64decode(tls["data"]["ca.crt"]).decode()
    host = planner.redis_host(feed)
    script = f"""
import pathlib, redis
from redis.exceptions import AuthenticationError, NoPermissionError
ca = pathlib.Path("/tmp/ca.crt"); ca.write_text({ca_pem!r})
def client(**kw):
    return redis.Redis(host={host!r}, port=6379, ssl=True, ssl_ca_certs=str(ca),
                       socket_timeout=10, **kw)
serve = client(username="serve", password={passwords["serve"]!r})
print("serve ping", serve.ping())
print("serve read", serve.hmget("qc:signal:BTCUSDT", ["book_seq"]))
for command in (("HSET", "qc:signal:BTCUSDT", "book_seq", "1"), ("FLUSHALL",),
                ("PUBLISH", "qc:updates:BTCUSDT", "forged")):
    try:
        serve.execute_command(*command)
        print("serve allowed", command[0])
    except NoPermissionError:
        print("serve refused", command[0])
relay = client(username="relay", password={passwords["relay"]!r})
print("relay sadd", relay.sadd("qc:symbols", "BTCUSDT"))
try:
    relay.flushall()
except NoPermissionError:
    print("relay refused FLUSHALL")
try:
    client(protocol=2).get("qc:symbols")
except AuthenticationError:
    print("anonymous refused")
try:
    redis.Redis(host={host!r}, port=6379, socket_timeout=10).ping()
except redis.ConnectionError:
    print("plaintext refused")
"""
    pods.create(
        api, other_namespace, pods.pod("redis-tls-client", runtime, ["python3", "-c", script])
    )
    pods.wait_phase(client.CoreV1Api(api), other_namespace, "redis-tls-client", "Succeeded")
    logs = pods.kubectl(node_cluster.kubeconfig, "logs", "-n", other_namespace, "redis-tls-client")
    assert "serve ping True" in logs
    assert "serve read [None]" in logs
    for command in ("HSET", "FLUSHALL", "PUBLISH"):
        assert f"serve refused {command}" in logs
    assert "relay sadd 1" in logs
    assert "relay refused FLUSHALL" in logs
    assert "anonymous refused" in logs
    assert "plaintext refused" in logs
    who = pods.kubectl(
        node_cluster.kubeconfig, "exec", "-n", other_namespace, f"{name}-0", "--", "id", "-u"
    )
    assert who.strip() == "999"


# ---- helpers ----------------------------------------------------------------------------


def _produce(config: dict[str, Any], topic: str, value: bytes) -> Any:
    delivered: list[Any] = []
    producer = Producer({**config, "log_level": 0})
    producer.produce(topic, value, on_delivery=lambda error, message: delivered.append(message))
    assert producer.flush(60) == 0
    return delivered[0]


def _delivery_error(config: dict[str, Any], topic: str) -> KafkaError | None:
    errors: list[KafkaError | None] = []
    producer = Producer({**config, "log_level": 0, "message.timeout.ms": 10_000})
    producer.produce(topic, b"forged", on_delivery=lambda error, message: errors.append(error))
    producer.flush(30)
    return errors[0]


def _consume(config: dict[str, Any], topic: str, timeout: float = 60.0) -> list[bytes]:
    consumer = Consumer(
        {
            **config,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "log_level": 0,
        }
    )
    consumer.subscribe([topic])
    try:
        values: list[bytes] = []

        def read() -> bool:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                values.append(message.value() or b"")
            return bool(values)

        eventually(read, f"a record on {topic}", timeout=timeout)
        return values
    finally:
        consumer.close()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _post(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url, method="POST", data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def _depth_after_subscribing(rest_url: str, symbol: str) -> Any:
    """A depth snapshot as a shard gets one: its diff stream subscribed first (the replay's
    timeline starts with its first websocket client)."""
    import asyncio

    import aiohttp

    async def run() -> Any:
        ws_url = (
            rest_url.replace("http://", "ws://") + f"/stream?streams={symbol.lower()}@depth@100ms"
        )
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
            await ws.receive(timeout=60)
            url = f"{rest_url}/api/v3/depth?symbol={symbol}&limit=10"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=60)) as response:
                return await response.json()

    return asyncio.run(run())


def test_a_namespace_quantcore_did_not_create_is_refused_untouched(
    node_cluster: cluster.Cluster,
    api: client.ApiClient,
    built_images: dict[str, images.BuiltImage],
) -> None:
    core = client.CoreV1Api(api)
    before: Any = core.read_namespace("kube-public")
    with pytest.raises(platformdeps.PlatformDepsError, match="quantcore did not create it"):
        platformdeps.deploy(
            node_cluster,
            kafka_image=built_images["kafka"].ref,
            runtime_image=built_images["runtime"].ref,
            namespace="kube-public",
        )
    after: Any = core.read_namespace("kube-public")
    assert after.metadata.resource_version == before.metadata.resource_version
    assert not core.list_namespaced_service("kube-public").items
