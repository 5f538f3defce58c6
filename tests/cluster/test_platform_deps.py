"""The platform's dependencies on the test ground (quantcore.devcluster.platformdeps): Kafka
and the replay exchange in their namespace, reached from the host and from other namespaces,
and the Redis image run the way the operator runs it."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from kubernetes import client, utils

from quantcore.devcluster import cluster, images, platformdeps
from quantcore.operator import planner
from tests.cluster.test_node import _create, _kubectl, _namespace, _pod, _wait_phase
from tests.fixtures.cluster import api_client, eventually

pytestmark = pytest.mark.cluster

SYMBOLS = platformdeps.DEFAULT_REPLAY_SYMBOLS


@pytest.fixture(scope="module")
def api(node_cluster: cluster.Cluster) -> Iterator[client.ApiClient]:
    with api_client(node_cluster.kubeconfig) as api:
        yield api


@pytest.fixture
def other_namespace(api: client.ApiClient) -> Iterator[str]:
    yield from _namespace(
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
    produced = _produce(platform_deps.kafka_host_bootstrap, topic, value)
    assert produced.error() is None
    assert _consume(platform_deps.kafka_host_bootstrap, topic) == [value]


def test_a_pod_in_another_namespace_reaches_kafka_by_its_service_name(
    node_cluster: cluster.Cluster,
    api: client.ApiClient,
    other_namespace: str,
    built_images: dict[str, images.BuiltImage],
    platform_deps: platformdeps.PlatformDeps,
) -> None:
    topic = f"t-pod-{uuid.uuid4().hex[:8]}"
    script = (
        "from confluent_kafka import Producer; from confluent_kafka.admin import AdminClient\n"
        f"bootstrap = {platform_deps.kafka_bootstrap!r}\n"
        "metadata = AdminClient({'bootstrap.servers': bootstrap}).list_topics(timeout=30)\n"
        "print('brokers', *sorted(f'{b.host}:{b.port}' for b in metadata.brokers.values()))\n"
        "p = Producer({'bootstrap.servers': bootstrap})\n"
        f"p.produce({topic!r}, b'from-a-pod')\n"
        "print('unsent', p.flush(30))\n"
    )
    _create(
        api,
        other_namespace,
        _pod("client", built_images["runtime"].ref, ["python3", "-c", script]),
    )
    _wait_phase(client.CoreV1Api(api), other_namespace, "client", "Succeeded")
    logs = _kubectl(node_cluster.kubeconfig, "logs", "-n", other_namespace, "client")
    # The broker advertises its Service's name, and the producer really connected to it.
    assert f"brokers kafka.{platform_deps.namespace}.svc.cluster.local:9092" in logs
    assert "unsent 0" in logs
    assert _consume(platform_deps.kafka_host_bootstrap, topic) == [b"from-a-pod"]


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
    feed = planner.sample_feed(namespace=other_namespace, redis={"image": images.REDIS_REF})
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
    _create(
        api,
        other_namespace,
        _pod("redis-client", built_images["runtime"].ref, ["python3", "-c", script]),
    )
    _wait_phase(client.CoreV1Api(api), other_namespace, "redis-client", "Succeeded")
    logs = _kubectl(node_cluster.kubeconfig, "logs", "-n", other_namespace, "redis-client")
    assert "ping True" in logs
    assert f"maxmemory {int(maxmemory.removesuffix('mb')) * 2**20}" in logs
    assert "save ''" in logs
    who = _kubectl(
        node_cluster.kubeconfig, "exec", "-n", other_namespace, f"{name}-0", "--", "id", "-u"
    )
    assert who.strip() == "999"


# ---- helpers ----------------------------------------------------------------------------


def _produce(bootstrap: str, topic: str, value: bytes) -> Any:
    delivered: list[Any] = []
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 0})
    producer.produce(topic, value, on_delivery=lambda error, message: delivered.append(message))
    assert producer.flush(60) == 0
    return delivered[0]


def _consume(bootstrap: str, topic: str, timeout: float = 60.0) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
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
