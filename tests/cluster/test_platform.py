"""The README's path on a cluster with a real node, end to end: `helm install` the chart with
the images built here (by digest), `kubectl apply` a MarketFeed, and a gRPC client outside the
cluster receives correct signals while the symbols change under it.

Everything runs in pods: Kafka (a KRaft broker from the Apache jars) and the replay exchange in
the test ground's namespace; the operator from the chart; the feed shards, Redis, the serving
tier and the SparkApplication (driver and executors, through the spark-operator, Kubernetes as
the Spark master) that the operator creates, checkpointing to the test ground's S3 API.

The tests share one release and one MarketFeed and run in file order: values, reshards, a
driver kill, universe mode. Figures go to the terminal (`pytest -s`) and to
`.dev/figures/platform.json`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from quantcore import lake
from quantcore.client.history import HistoryQuery, history_rows
from quantcore.client.security import ClientCredentials
from quantcore.devcluster import cluster, platformdeps
from quantcore.devservices import certs
from quantcore.devservices import s3 as devs3
from quantcore.feed import copies as symbol_copies
from quantcore.operator import api as mf_api
from quantcore.operator import planner
from quantcore.routing import CONFIGMAP_KEY, RoutingTable
from tests.chart import CHART, ROOT, run_helm, set_args
from tests.cluster.signalrecorder import SignalRecorder, longest_gap
from tests.fixtures.cluster import api_client, eventually, redis_tls_secret
from tests.signalcheck import assert_served_values_match

pytestmark = pytest.mark.cluster

EXAMPLE = ROOT / "examples" / "marketfeed-local.yaml"
FIGURES = ROOT / ".dev" / "figures" / "platform.json"
RUNTIME_REF = "ghcr.io/quantcore/quantcore:0.1.0"
SPARK_REF = "ghcr.io/quantcore/quantcore-spark:0.1.0"
Obj = dict[str, Any]


@dataclass
class Platform:
    cluster: cluster.Cluster
    deps: platformdeps.PlatformDeps
    api: client.ApiClient
    namespace: str  # where the MarketFeed lives
    feed: str
    recorder: SignalRecorder
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def marketfeed(self) -> Obj:
        found: Any = self.custom.get_namespaced_custom_object(
            mf_api.GROUP, mf_api.VERSION, self.namespace, mf_api.PLURAL, self.feed
        )
        return found

    def patch_spec(self, spec: Obj) -> None:
        self.custom.patch_namespaced_custom_object(
            mf_api.GROUP,
            mf_api.VERSION,
            self.namespace,
            mf_api.PLURAL,
            self.feed,
            {"spec": spec},
        )

    def pods(self, component: str) -> dict[str, Any]:
        selector = f"{planner.FEED_LABEL}={self.feed},{planner.COMPONENT_LABEL}={component}"
        listed: Any = self.core.list_namespaced_pod(self.namespace, label_selector=selector)
        return {p.metadata.name: p for p in listed.items if p.metadata.deletion_timestamp is None}

    def spark_pods(self) -> dict[str, Any]:
        selector = f"sparkoperator.k8s.io/app-name={planner.spark_application_name(self.feed)}"
        listed: Any = self.core.list_namespaced_pod(self.namespace, label_selector=selector)
        return {p.metadata.name: p for p in listed.items if p.metadata.deletion_timestamp is None}

    def shard_tables(self) -> dict[int, RoutingTable]:
        selector = f"{planner.FEED_LABEL}={self.feed},{planner.COMPONENT_LABEL}=feed"
        maps: Any = self.core.list_namespaced_config_map(self.namespace, label_selector=selector)
        return {
            int(cm.metadata.labels[planner.SHARD_LABEL]): RoutingTable.from_json(
                cm.data[CONFIGMAP_KEY]
            )
            for cm in maps.items
        }

    def condition(self, kind: str) -> Obj | None:
        conditions = (self.marketfeed().get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == kind), None)

    def settled(self) -> bool:
        """Ready and no longer progressing at the current generation."""
        body = self.marketfeed()
        status = body.get("status") or {}
        if status.get("observedGeneration") != body["metadata"]["generation"]:
            return False
        ready = self.condition("Ready")
        progressing = self.condition("Progressing")
        return bool(ready and ready["status"] == "True") and not (
            progressing and progressing["status"] == "True"
        )

    def record(self, name: str, value: Any) -> None:
        self.figures[name] = value
        print(f"FIGURE {name}: {value}")
        FIGURES.parent.mkdir(parents=True, exist_ok=True)
        FIGURES.write_text(json.dumps(self.figures, indent=2, default=str))


RECORDINGS = sorted((ROOT / "recordings" / "binance-spot").glob("*.gz"))


def copies(n: int) -> list[str]:
    """The first `n` symbols the replay serves (the recordings and their copies)."""
    return [copy.name for copy in symbol_copies.plan(RECORDINGS, n)]


def restarts(pods: dict[str, Any]) -> int:
    return sum(
        status.restart_count
        for pod in pods.values()
        for status in (pod.status.container_statuses or [])
    )


def checkpoint_prefix(namespace: str) -> str:
    return f"checkpoints/{namespace}"


def lake_prefix(namespace: str) -> str:
    return f"lake/{namespace}"


def marketfeed_manifest(
    namespace: str, pinned: dict[str, str], deps: platformdeps.PlatformDeps, symbols: list[str]
) -> Obj:
    """examples/marketfeed-local.yaml as a user applies it, with this build's image digests."""
    body: Obj = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["namespace"] = namespace
    spec = body["spec"]
    spec["image"] = pinned[RUNTIME_REF]
    spec["spark"]["image"] = pinned[SPARK_REF]
    spec["redis"]["image"] = pinned[spec["redis"]["image"]]
    spec["symbols"] = symbols
    # The example's checkpoint path, made this run's own (a reused cluster keeps the bucket).
    spec["spark"]["checkpoint"] = f"s3a://{deps.s3_bucket}/{checkpoint_prefix(namespace)}"
    # History on the same S3 API (the operator adds the lake's writers to the stream job).
    spec["lake"] = {"location": f"s3a://{deps.s3_bucket}/{lake_prefix(namespace)}"}
    return body


def create_serving_secrets(
    core: client.CoreV1Api, namespace: str, body: Obj, directory: Path
) -> ClientCredentials:
    """The two Secrets the example's `serving` names, in cert-manager's layout (a CA, a
    server certificate for the Service's names and 127.0.0.1, where the test's port forward
    ends) and the token file; returns what a client on the host needs."""
    feed = body["metadata"]["name"]
    serve = planner.serve_name(feed)
    serving = body["spec"]["serving"]
    names = (serve, f"{serve}.{namespace}.svc", "localhost", "127.0.0.1")
    made, _ = certs.local_credentials(directory, names=names)
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=serving["tls"]["secretName"]),
            type="kubernetes.io/tls",
            string_data={
                "tls.crt": made.server_cert.read_text(),
                "tls.key": made.server_key.read_text(),
                "ca.crt": made.ca.read_text(),
            },
        ),
    )
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=serving["auth"]["tokensSecret"]),
            string_data={"tokens": made.tokens.read_text()},
        ),
    )
    return ClientCredentials(ca=made.ca, token=made.client_token.read_text().strip())


@pytest.fixture(scope="module")
def platform(
    spark_operator: cluster.Cluster,
    platform_deps: platformdeps.PlatformDeps,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    running = spark_operator
    pinned = running.pinned_images()
    markets = f"markets-{uuid.uuid4().hex[:6]}"
    system = f"quantcore-{uuid.uuid4().hex[:6]}"
    release = f"qc{uuid.uuid4().hex[:6]}"
    with api_client(running.kubeconfig) as kube:
        core = client.CoreV1Api(kube)
        core.create_namespace(
            client.V1Namespace(
                metadata=client.V1ObjectMeta(
                    name=markets,
                    labels={"pod-security.kubernetes.io/enforce": "restricted"},
                )
            )
        )
        # The operator's own Kafka user and the broker's CA, as the chart takes them
        # (operator.kafka), in the release's namespace, made before the install.
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=system)))
        for secret in (
            platformdeps.kafka_operator_secret(platform_deps, system, "quantcore-kafka-operator"),
            platformdeps.kafka_ca_secret(platform_deps, system, "kafka-ca"),
        ):
            core.create_namespaced_secret(system, secret)  # type: ignore[arg-type]
        figures: dict[str, Any] = {}
        started = time.monotonic()
        run_helm(
            "install",
            release,
            str(CHART),
            "--kubeconfig",
            str(running.kubeconfig),
            "--namespace",
            system,
            "--create-namespace",
            # The README's values for the test ground: its exchange and Kafka are pods, which
            # the NetworkPolicies (enforced by the node's engine) must name.
            "--values",
            str(ROOT / "examples" / "values-local.yaml"),
            *set_args(
                {
                    "image.digest": pinned[RUNTIME_REF].split("@")[1],
                    "operator.watchNamespaces": [markets],
                    "operator.kafka": {
                        "credentialsSecretName": "quantcore-kafka-operator",
                        "caSecretName": "kafka-ca",
                    },
                }
            ),
            "--wait",
            "--timeout",
            "300s",
        )
        figures["helm_install_to_operator_ready_s"] = round(time.monotonic() - started, 1)

        body = marketfeed_manifest(markets, pinned, platform_deps, copies(30))
        feed = body["metadata"]["name"]
        # Redis's certificate, as cert-manager would issue it (the README's step); the
        # operator makes the passwords Secret itself.
        core.create_namespaced_secret(markets, redis_tls_secret(feed, markets))  # type: ignore[arg-type]
        # Kafka's users for the feed's pods and the CA (the README's `kafka-secrets` step),
        # and the ACLs of the feed's topics (the example keeps the default names).
        platformdeps.grant_kafka(
            platform_deps, mf_api.MarketFeedSpec.model_validate(body["spec"]).kafka.topics.names()
        )
        for secret in platformdeps.kafka_client_secrets(platform_deps, markets, feed):
            core.create_namespaced_secret(markets, secret)  # type: ignore[arg-type]
        credentials = create_serving_secrets(
            core, markets, body, tmp_path_factory.mktemp("serving-tls")
        )
        applied = time.monotonic()
        client.CustomObjectsApi(kube).create_namespaced_custom_object(
            mf_api.GROUP, mf_api.VERSION, markets, mf_api.PLURAL, body
        )
        serve = planner.serve_name(feed)
        service: Any = eventually(
            lambda: _service(core, markets, serve), f"the serving Service {serve}", timeout=120
        )
        port = next(p.port for p in service.spec.ports if p.name == "grpc")
        local = cluster.forward(running.directory, f"{service.spec.cluster_ip}:{port}", serve)
        recorder = SignalRecorder(f"127.0.0.1:{local}", credentials=credentials)
        platform = Platform(running, platform_deps, kube, markets, feed, recorder, figures)
        try:
            recorder.wait_until(
                lambda: bool(recorder.arrivals), "the first update at the client", timeout=900
            )
            platform.record("apply_to_first_update_s", round(time.monotonic() - applied, 1))
            yield platform
        finally:
            recorder.close()
            _diagnose(platform)
            _delete_marketfeed(client.CustomObjectsApi(kube), markets, feed)
            run_helm(
                "uninstall", release, "--kubeconfig", str(running.kubeconfig), "-n", system,
                check=False,
            )  # fmt: skip
            core.delete_namespace(markets)
            core.delete_namespace(system)


def _delete_marketfeed(custom: client.CustomObjectsApi, namespace: str, name: str) -> None:
    """Deletes the MarketFeed and waits until the operator has finished with it (its finalizer
    removes the topics): uninstalling the operator first would leave it undeletable."""
    args = (mf_api.GROUP, mf_api.VERSION, namespace, mf_api.PLURAL, name)
    try:
        custom.delete_namespaced_custom_object(*args)
    except ApiException as error:
        if error.status != 404:
            raise

    def gone() -> bool:
        try:
            custom.get_namespaced_custom_object(*args)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    eventually(gone, f"MarketFeed {namespace}/{name} deleted", timeout=120)


def _service(core: client.CoreV1Api, namespace: str, name: str) -> Any:
    try:
        found: Any = core.read_namespaced_service(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return found if found.spec.cluster_ip else None


def _diagnose(platform: Platform) -> None:
    """On the way out: every pod's phase and restarts, for reading a failure."""
    try:
        pods: Any = platform.core.list_namespaced_pod(platform.namespace).items
    except ApiException:
        return
    for pod in pods:
        statuses = pod.status.container_statuses or []
        print(
            f"pod {pod.metadata.name}: {pod.status.phase}, "
            f"restarts {[s.restart_count for s in statuses]}"
        )


# ---- the tests --------------------------------------------------------------------------


def test_served_book_updates_equal_the_reference_at_the_same_sequence(
    platform: Platform,
) -> None:
    symbols = set(copies(30))
    start = time.monotonic()
    recorder = platform.recorder
    recorder.wait_until(
        lambda: all(
            sum(1 for a in recorder.since(0) if a.update.symbol == s) >= 5 for s in symbols
        ),
        "5 book updates of every symbol",
        timeout=600,
    )
    platform.record("all_30_symbols_live_s", round(time.monotonic() - start, 1))
    books = [a.update for a in recorder.since(0)]
    assert {u.symbol for u in books} == symbols
    # Trade flow: published by the shards once a symbol's windows are covered (30 s of its
    # streams), then as fast as the book.
    recorder.wait_until(
        lambda: symbols <= recorder.symbols(0, kind="trades"),
        "a trade-flow update of every symbol",
        timeout=300,
    )
    last: dict[tuple[str, str], int] = {}
    for arrival in list(recorder.arrivals):
        key = (arrival.update.symbol, arrival.kind)
        assert arrival.update.sequence > last.get(key, -1), f"{key} went backwards"
        last[key] = arrival.update.sequence
    assert_served_values_match(
        books[-300:],
        platform.deps.kafka_host_bootstrap,
        platform.deps.kafka_auth("admin").client_config(),
    )


def _reshard(platform: Platform, symbols: list[str], step: str) -> None:
    before_tables = platform.shard_tables()
    before_feed = platform.pods("feed")
    before_spark = platform.spark_pods()
    before_serve = platform.pods("serve")
    started = time.monotonic()
    platform.patch_spec({"symbols": symbols})
    eventually(platform.settled, f"the MarketFeed settled after {step}", timeout=600)
    recorder = platform.recorder
    recorder.wait_until(
        lambda: set(symbols) <= recorder.symbols(started),
        f"an update of every symbol after {step}",
        timeout=600,
    )
    ended = time.monotonic()
    after_tables = platform.shard_tables()

    def owner(tables: dict[int, RoutingTable], symbol: str) -> int | None:
        return next((i for i, t in tables.items() if symbol in t.symbols), None)

    moved = [
        s
        for s in symbols
        if owner(before_tables, s) is not None and owner(before_tables, s) != owner(after_tables, s)
    ]
    gaps = {s: round(longest_gap(recorder.arrivals, s, started, ended), 2) for s in moved}
    # The same measure for symbols that stayed put: what the loaded machine gives anyway.
    stayed = [s for s in symbols if s not in moved and owner(before_tables, s) is not None]
    baseline = max((longest_gap(recorder.arrivals, s, started, ended) for s in stayed), default=0.0)
    platform.record(
        f"reshard_{step}",
        {
            "seconds": round(ended - started, 1),
            "moved": len(moved),
            "longest_gap_s": max(gaps.values(), default=0.0),
            "longest_gap_of_symbols_that_stayed_s": round(baseline, 2),
            "gaps_s": gaps,
        },
    )
    # Unchanged shards keep their pods; the driver is the same pod; nothing restarted.
    unchanged = [i for i, t in before_tables.items() if after_tables.get(i) == t]
    after_feed = platform.pods("feed")
    for shard in unchanged:
        old = {
            n
            for n, p in before_feed.items()
            if p.metadata.labels[planner.SHARD_LABEL] == str(shard)
        }
        assert old <= set(after_feed), f"shard {shard} kept its symbols but its pod changed"
    # Every attempt's driver has the same name: the same pod is the same uid.
    driver = {p.metadata.uid for p in before_spark.values() if _is_driver(p)}
    assert driver, "no Spark driver pod before the reshard"
    now = {p.metadata.uid for p in platform.spark_pods().values() if _is_driver(p)}
    assert driver == now, "the Spark driver pod was replaced"
    assert set(before_serve) == set(platform.pods("serve")), "serving pods were replaced"
    assert restarts({**after_feed, **platform.spark_pods(), **platform.pods("serve")}) == 0
    for symbol, gap in gaps.items():
        # The replay sends each symbol's depth every 100 ms; a handover may not stop it.
        assert gap < 5.0, f"{symbol} went {gap:.1f}s without an update while it moved ({step})"


def _lake_signal_files(platform: Platform) -> dict[str, str]:
    """The signals table's committed Parquet files on the S3 API (read through the sink's log,
    as every lake reader does): key -> symbol."""
    s3 = devs3.client(platform.deps.s3_host_endpoint)
    bucket = platform.deps.s3_bucket
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{lake_prefix(platform.namespace)}/"
    )
    log_keys = [
        o["Key"]
        for page in pages
        for o in page.get("Contents", [])
        if "/signals/_spark_metadata/" in o["Key"]
    ]
    log = {
        key.rsplit("/", 1)[1]: s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        for key in log_keys
    }
    files = {}
    for uri in lake.committed_files(log):
        key = uri.split(f"{bucket}/", 1)[1]
        partition = lake.partition_of(key)
        if partition is not None:
            files[key] = partition.symbol
    return files


def test_the_lake_on_the_s3_api_holds_the_book_signals_clients_received(
    platform: Platform, tmp_path: Path
) -> None:
    import duckdb

    symbols = set(platform.marketfeed()["spec"].get("symbols") or [])

    def every_symbol() -> dict[str, str] | None:
        files = _lake_signal_files(platform)
        return files if symbols <= set(files.values()) else None

    eventually(every_symbol, "the lake's signals of every symbol on the S3 API", timeout=300)
    # Every row a client received is a row of the lake with the same values; a sample of three
    # symbols' files is read back from the S3 API. The first batches can hold only rows
    # published before the client subscribed (the job catching up on the topics): wait for
    # the lake to reach rows the client has.
    sample = sorted(symbols)[:3]
    s3 = devs3.client(platform.deps.s3_host_endpoint)
    read: dict[str, list[tuple[str, int, float]]] = {}  # key -> its rows (a file never changes)

    def lake_rows() -> list[tuple[str, int, float]]:
        for n, (key, symbol) in enumerate(sorted(_lake_signal_files(platform).items())):
            if symbol in sample and key not in read:
                local = tmp_path / f"{n}.parquet"
                s3.download_file(platform.deps.s3_bucket, key, str(local))
                got = duckdb.sql(f"SELECT sequence, mid FROM read_parquet('{local}')").fetchall()
                read[key] = [(symbol, int(seq), float(mid)) for seq, mid in got]
        return [row for rows in read.values() for row in rows]

    def received() -> dict[tuple[str, int], float]:
        return {
            (a.update.symbol, a.update.sequence): a.update.book.mid
            for a in platform.recorder.since(0)
            if a.update.symbol in sample
        }

    def overlap() -> set[tuple[str, int]]:
        rows = {(symbol, seq) for symbol, seq, _ in lake_rows()}
        both = rows & received().keys()
        return both if len(both) >= 10 else set()

    both = eventually(overlap, "ten received rows in the lake", timeout=300)
    rows = lake_rows()
    keys = [(symbol, seq) for symbol, seq, _ in rows]
    assert len(keys) == len(set(keys)), "a row is in the lake twice"
    lake_mid = {(symbol, seq): mid for symbol, seq, mid in rows}
    got = received()
    assert {k: lake_mid[k] for k in both} == {k: got[k] for k in both}
    platform.record("lake_rows_compared", len(both))

    # The History RPC of the serving pods reads the same lake (their mirror of it): every row
    # read back above, with the same values, and no row twice.
    days = sorted({lake.partition_date(u.update.event_time_ms) for u in platform.recorder.since(0)})
    span = lake.interval(days[0], days[-1])
    for symbol in sample:
        asked = HistoryQuery(symbol, span.start_ms, span.end_ms, fields=("sequence", "mid"))
        started = time.monotonic()
        _, history = asyncio.run(
            history_rows(platform.recorder.target, asked, platform.recorder.credentials)
        )
        platform.record(f"history_{symbol}_s", round(time.monotonic() - started, 2))
        served = {(symbol, int(seq)): float(mid) for seq, mid in history}
        assert len(served) == len(history), f"History returned a row of {symbol} twice"
        mine = {k: v for k, v in lake_mid.items() if k[0] == symbol}
        # The lake grows while the test reads: History ran later, so it holds at least these.
        assert mine.keys() <= served.keys(), symbol
        assert {k: served[k] for k in mine} == mine, symbol


def test_reshard_30_100_20_hands_symbols_over_without_a_gap(platform: Platform) -> None:
    _reshard(platform, copies(100), "30_to_100")
    _reshard(platform, copies(20), "100_to_20")
    # Serving reads the routing table from its mounted ConfigMap, which the kubelet refreshes
    # on its own sync period: the served set follows the reshard within that period.
    eventually(
        lambda: set(_list_symbols(platform)) == set(copies(20)),
        "ListSymbols naming the 20 symbols",
        timeout=300,
    )


def _is_driver(pod: Any) -> bool:
    return bool((pod.metadata.labels or {}).get("spark-role") == "driver")


def _checkpoint_listing(platform: Platform, path: str) -> dict[str, Any]:
    """The stream job's checkpoint objects under `path` on the S3 API: key -> last modified."""
    s3 = devs3.client(platform.deps.s3_host_endpoint)
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=platform.deps.s3_bucket, Prefix=f"{checkpoint_prefix(platform.namespace)}/{path}"
    )
    return {o["Key"]: o["LastModified"] for page in pages for o in page.get("Contents", [])}


def _checkpoint_objects(platform: Platform, query: str) -> dict[str, Any]:
    """The offset log of `query`: one entry per batch, named by its number (a write in flight
    has a temporary name)."""
    listing = _checkpoint_listing(platform, f"{query}/offsets/")
    return {k: m for k, m in listing.items() if k.rsplit("/", 1)[1].isdigit()}


def test_driver_kill_resumes_from_the_s3_checkpoint(platform: Platform) -> None:
    # The malformed-trade counter commits a micro-batch every 10 s while trades arrive: its
    # offset log shows progress.
    before = eventually(
        lambda: _checkpoint_objects(platform, "trades-malformed"),
        "the stream job's checkpoint on the S3 API",
        timeout=120,
    )
    # The book query runs in real-time mode: it logs a batch's offsets when the batch ends
    # (every 5 minutes); its checkpoint's metadata is there from the start.
    assert _checkpoint_listing(platform, "book/metadata"), "no book checkpoint on the S3 API"
    drivers = [p for p in platform.spark_pods().values() if _is_driver(p)]
    assert len(drivers) == 1
    old = drivers[0].metadata
    killed = time.monotonic()
    platform.core.delete_namespaced_pod(old.name, platform.namespace, grace_period_seconds=0)

    def new_driver() -> Any:
        # The spark-operator names every attempt's driver alike: a new pod is a new uid.
        for pod in platform.spark_pods().values():
            if _is_driver(pod) and pod.metadata.uid != old.uid:
                for status in pod.status.container_statuses or []:
                    if status.state.running is not None:
                        return status.state.running.started_at
        return None

    started = eventually(new_driver, "a new Spark driver running", timeout=300)
    started_ns = int(started.timestamp() * 1e9)
    recorder = platform.recorder
    symbols = set(platform.marketfeed()["spec"].get("symbols") or [])
    # Written by the new driver's relay: its sink time is after the new driver started (the
    # old one may still write for a moment after its pod object is gone).
    recorder.wait_until(
        lambda: (
            symbols
            <= {
                a.update.symbol
                for a in recorder.since(killed)
                if a.update.hops.sink_write_ns > started_ns
            }
        ),
        "updates of every symbol written by the new driver",
        timeout=900,
    )
    platform.record("driver_kill_to_updates_s", round(time.monotonic() - killed, 1))
    # Resumed from the checkpoint, not started afresh: the offset log goes on from the batch it
    # had reached (a fresh start begins again at batch 0) and what it kept is untouched. Spark
    # purges entries older than its last 100 batches, so only the ones still there compare.
    after = eventually(
        lambda: {
            k: m
            for k, m in _checkpoint_objects(platform, "trades-malformed").items()
            if k not in before
        },
        "a trades-malformed batch of the new driver",
        timeout=120,
    )
    current = _checkpoint_objects(platform, "trades-malformed")
    for key in before.keys() & current.keys():
        assert current[key] == before[key], f"{key} was rewritten after the driver restart"
    reached = max(_batch(key) for key in before)
    assert min(_batch(key) for key in after) >= reached, (
        f"the new driver started its offset log over at batch {min(_batch(k) for k in after)}, "
        f"before {reached}, where the old one had reached"
    )


def _batch(key: str) -> int:
    return int(key.rsplit("/", 1)[1])


def _list_symbols(platform: Platform) -> list[str]:
    import grpc

    from quantcore.v1 import marketdata_pb2, marketdata_pb2_grpc

    creds = platform.recorder.credentials
    channel_credentials = creds.channel_credentials()
    with grpc.secure_channel(platform.recorder.target, channel_credentials) as channel:
        reply = marketdata_pb2_grpc.MarketDataStub(channel).ListSymbols(
            marketdata_pb2.ListSymbolsRequest(), timeout=10, metadata=creds.metadata()
        )
    return list(reply.symbols)


def _set_ticker_ranking(platform: Platform, ranking: list[str]) -> None:
    """Makes the replay's 24 h ticker rank `ranking` first to last (by quote volume)."""
    import urllib.request

    volumes = dict.fromkeys(copies(platform.deps.replay_symbols), 1.0)  # the rest: last
    volumes.update({symbol: float(10**12 - i * 10**9) for i, symbol in enumerate(ranking)})
    request = urllib.request.Request(
        f"{platform.deps.replay_host_url}/_replay/ticker",
        data=json.dumps(volumes).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200


def test_universe_mode_follows_the_ticker_ranking(platform: Platform) -> None:
    top = 8
    ranking = copies(40)
    _set_ticker_ranking(platform, ranking)
    platform.patch_spec(
        {
            "symbols": None,
            "universe": {"quoteAsset": "USDT", "top": top, "hysteresis": 0, "refreshSeconds": 30},
        }
    )
    first = set(ranking[:top])
    eventually(lambda: set(_list_symbols(platform)) == first, "the first top 8 served", 600)
    eventually(platform.settled, "the MarketFeed settled in universe mode", timeout=600)
    # The bottom of the ranking rises to the top: those symbols come in, the old top leaves.
    changed = time.monotonic()
    reranked = list(reversed(ranking))
    _set_ticker_ranking(platform, reranked)
    second = set(reranked[:top])
    eventually(lambda: set(_list_symbols(platform)) == second, "the new top 8 served", timeout=600)
    platform.record("universe_rank_change_to_served_s", round(time.monotonic() - changed, 1))
    recorder = platform.recorder
    recorder.wait_until(
        lambda: second <= recorder.symbols(changed), "updates of the new top 8", timeout=600
    )
    assert not (first & set(_list_symbols(platform)))
