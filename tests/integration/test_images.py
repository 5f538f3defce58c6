"""The images `make images` builds work without a cluster: each one runs under buildah
(chroot isolation), as the user and with the entry point a pod would get.

Building from cold takes minutes (debootstrap, pip, a Go build); `make test` builds them
first (`make images`), so here build_all() finds every archive cached.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import tarfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from quantcore.devcluster import images, versions
from quantcore.devcluster.buildah import Buildah

pytestmark = [
    pytest.mark.images,
    pytest.mark.skipif(shutil.which("buildah") is None, reason="buildah is not installed"),
    pytest.mark.timeout(3600),
]


@pytest.fixture(scope="module")
def built() -> dict[str, images.BuiltImage]:
    return images.build_all()


class Running:
    """A working container of one image: commands run in it as the image's user."""

    def __init__(self, buildah: Buildah, container: str) -> None:
        self.buildah = buildah
        self.container = container

    def __call__(self, *command: str, env: dict[str, str] | None = None) -> str:
        return self.buildah.run_in(self.container, command, env=env)


def running(built: dict[str, images.BuiltImage], name: str) -> Iterator[Running]:
    buildah = images.ensure_in_store(built[name])
    with buildah.container(built[name].content_ref) as container:
        yield Running(buildah, container)


@pytest.fixture(scope="module")
def runtime(built: dict[str, images.BuiltImage]) -> Iterator[Running]:
    yield from running(built, "runtime")


@pytest.fixture(scope="module")
def spark(built: dict[str, images.BuiltImage]) -> Iterator[Running]:
    yield from running(built, "spark")


@pytest.fixture(scope="module")
def operator(built: dict[str, images.BuiltImage]) -> Iterator[Running]:
    yield from running(built, "spark-operator")


@pytest.fixture(scope="module")
def pause(built: dict[str, images.BuiltImage]) -> Iterator[Running]:
    yield from running(built, "pause")


@pytest.fixture(scope="module")
def kafka(built: dict[str, images.BuiltImage]) -> Iterator[Running]:
    yield from running(built, "kafka")


@pytest.fixture(scope="module")
def redis(built: dict[str, images.BuiltImage]) -> Iterator[Running]:
    yield from running(built, "redis")


# A buildah container's host name resolves nowhere (a pod's does, through its /etc/hosts):
# Spark is told its own address instead of looking it up.
LOOPBACK_SPARK = {"SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOCAL_HOSTNAME": "localhost"}


def config(built: dict[str, images.BuiltImage], name: str) -> dict[str, object]:
    return images.ensure_in_store(built[name]).image_config(built[name].content_ref)


def test_every_archive_holds_its_image_under_its_reference(
    built: dict[str, images.BuiltImage],
) -> None:
    assert set(built) == {"runtime", "spark", "spark-operator", "pause", "kafka", "redis"}
    for image in built.values():
        with tarfile.open(image.archive) as tar:
            member = tar.extractfile("manifest.json")
            assert member is not None
            manifest = json.load(member)
        assert manifest[0]["RepoTags"] == [image.ref]
        assert image.archive.stat().st_size == image.archive_bytes


def test_a_second_build_reuses_every_archive(built: dict[str, images.BuiltImage]) -> None:
    mtimes = {name: image.archive.stat().st_mtime_ns for name, image in built.items()}
    again = images.build_all()
    assert {name: image.key for name, image in again.items()} == {
        name: image.key for name, image in built.items()
    }
    assert {name: image.archive.stat().st_mtime_ns for name, image in again.items()} == mtimes


def test_runtime_image_runs_the_cli_with_its_compiled_feed_modules(
    built: dict[str, images.BuiltImage], runtime: Running
) -> None:
    cfg = config(built, "runtime")
    assert cfg["Entrypoint"] == ["quantcore"]
    assert cfg["User"] == "10001:10001"
    assert "usage: quantcore" in runtime("quantcore", "--help").lower()
    out = runtime(
        "python",
        "-c",
        "import quantcore.feed._orderbook as o, quantcore.feed._depth_diff as d;"
        "print(o.__file__); print(d.__file__)",
    )
    assert [line.rsplit(".", 1)[-1] for line in out.splitlines()] == ["so", "so"]
    # The compiler and Python's headers stayed in the build stage.
    assert runtime("bash", "-c", "command -v gcc cc || echo none").strip() == "none"
    assert runtime("bash", "-c", "ls /usr/include/python3* 2>/dev/null || echo none") == "none\n"
    # Nothing of the build's own settings (pip's, the CA bundle mount) stayed behind.
    assert (
        runtime("bash", "-c", "ls -A /mnt; ls /etc/pip.conf 2>&1 || true")
        .strip()
        .endswith("No such file or directory")
    )


def test_spark_image_is_a_complete_spark(
    built: dict[str, images.BuiltImage], spark: Running
) -> None:
    cfg = config(built, "spark")
    assert cfg["User"] == "185:185"
    assert cfg["Entrypoint"] == ["/usr/bin/tini", "--", "/opt/spark/entrypoint.sh"]
    version = spark(
        "/opt/spark/entrypoint.sh", "bash", "-c", "spark-submit --version 2>&1", env=LOOPBACK_SPARK
    )
    assert f"version {importlib.metadata.version('pyspark')}" in version
    jars = spark("bash", "-c", "ls $SPARK_HOME/jars")
    assert "spark-kubernetes_2.13" in jars
    assert "spark-sql-kafka-0-10_2.13" in jars


def test_spark_image_runs_a_job_through_its_driver_entrypoint(spark: Running) -> None:
    job = textwrap.dedent(
        """
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.appName("image-check").getOrCreate()
        total = spark.range(100).selectExpr("sum(id) AS s").first()["s"]
        kafka = spark._jvm.java.lang.Class.forName(
            "org.apache.spark.sql.kafka010.KafkaSourceProvider").getName()
        import quantcore.stream
        print(f"RESULT {total} {kafka}")
        spark.stop()
        """
    )
    out = spark(
        "bash",
        "-c",
        f"cat > /tmp/job.py <<'EOF'\n{job}\nEOF\n"
        "/opt/spark/entrypoint.sh driver --master 'local[1]' "
        "--conf spark.ui.enabled=false /tmp/job.py 2>/tmp/driver.log "
        "|| { tail -40 /tmp/driver.log; exit 1; }",
        env={"SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1", **LOOPBACK_SPARK},
    )
    assert "RESULT 4950 org.apache.spark.sql.kafka010.KafkaSourceProvider" in out


def test_spark_image_checkpoints_to_s3_with_its_own_jars(spark: Running, s3_endpoint: str) -> None:
    """The stream job's session in the image, under its driver entry point (spark-submit with a
    master of its own): the launcher's master stays, and S3A writes through the baked-in
    hadoop-aws and AWS SDK jars (nothing resolved at start) to the S3 API on loopback."""
    from quantcore.devservices import s3
    from quantcore.devservices.spark import pyspark_hadoop_version

    jars = spark("bash", "-c", "ls $SPARK_HOME/jars")
    assert f"hadoop-aws-{pyspark_hadoop_version()}.jar" in jars
    assert "bundle-2." in jars
    assert (
        spark("python", "-c", "import quantcore.stream.job, quantcore.stream.s3a; print('ok')")
        == "ok\n"
    )
    bucket = f"image-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(s3_endpoint, bucket)
    job = textwrap.dedent(
        """
        import json, os
        from quantcore.stream import job, session
        checkpoint = os.environ["CHECKPOINT"]
        spark = session.build_session("image-s3a", [], **job.session_conf(1, checkpoint))
        conf = spark.sparkContext.getConf()
        spark.range(10).write.parquet(job.join_location(checkpoint, "probe"))
        print("RESULT " + json.dumps({"master": conf.get("spark.master"),
            "packages": conf.get("spark.jars.packages", "")}))
        spark.stop()
        """
    )
    # With AWS keys in the environment spark-submit looks up its own host name, which only a
    # pod's /etc/hosts resolves: here the JVM gets a hosts file naming it.
    out = spark(
        "bash",
        "-c",
        f"cat > /tmp/job.py <<'EOF'\n{job}\nEOF\n"
        'echo "127.0.0.1 localhost $(cat /proc/sys/kernel/hostname)" > /tmp/hosts\n'
        "/opt/spark/entrypoint.sh driver --master 'local[3]' "
        "--driver-java-options -Djdk.net.hosts.file=/tmp/hosts "
        "--conf spark.ui.enabled=false /tmp/job.py 2>/tmp/driver.log "
        "|| { tail -40 /tmp/driver.log; exit 1; }",
        env={
            "SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1",
            "CHECKPOINT": f"s3a://{bucket}/stream",
            **s3.client_env(s3_endpoint),
            **LOOPBACK_SPARK,
        },
    )
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    # spark-submit's master, not the local[1] the job asks for when nothing gave one.
    assert result == {"master": "local[3]", "packages": ""}
    keys = s3.object_keys(s3_endpoint, bucket, "stream/probe/")
    assert "stream/probe/_SUCCESS" in keys
    assert any(k.endswith(".parquet") for k in keys), keys


def test_spark_operator_image_carries_the_controller_and_spark(
    built: dict[str, images.BuiltImage], operator: Running
) -> None:
    cfg = config(built, "spark-operator")
    assert cfg["Entrypoint"] == ["/usr/bin/tini", "--", "/usr/local/bin/spark-operator"]
    assert cfg["User"] == "185:185"
    commands = operator("/usr/local/bin/spark-operator", "--help")
    assert "controller" in commands
    assert "webhook" in commands
    start = operator("/usr/local/bin/spark-operator", "controller", "start", "--help")
    assert "--namespaces" in start
    assert versions.SPARK_OPERATOR.removeprefix("v") in operator(
        "/usr/local/bin/spark-operator", "version"
    )
    # It submits applications with the Spark image's spark-submit.
    assert operator("bash", "-c", "test -x $SPARK_HOME/bin/spark-submit && echo ok") == "ok\n"


def test_pause_image_is_one_static_program(
    built: dict[str, images.BuiltImage], pause: Running
) -> None:
    cfg = config(built, "pause")
    assert cfg["Entrypoint"] == ["/pause"]
    assert cfg["User"] == "65535:65535"
    assert pause("/pause", "--version") == "quantcore-pause 1\n"
    with tarfile.open(built["pause"].archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        layers = json.load(member)[0]["Layers"]
        assert len(layers) == 1
        layer = tar.extractfile(layers[0])
        assert layer is not None
        with tarfile.open(fileobj=layer) as files:
            names = [m.name.lstrip("./") for m in files.getmembers() if m.isfile()]
    assert names == ["pause"]


def containerd_binaries() -> Path | None:
    """A directory with containerd and ctr: $QUANTCORE_CONTAINERD_BIN, else a build of the
    test ground's in the cache."""
    configured = os.environ.get("QUANTCORE_CONTAINERD_BIN")
    candidates = [Path(configured)] if configured else []
    candidates += sorted(versions.cache_root().glob("containerd-v*/bin"), reverse=True)
    for directory in candidates:
        if (directory / "containerd").is_file() and (directory / "ctr").is_file():
            return directory
    return None


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A throwaway containerd (no CRI, no registry) on a socket in tmp_path: (ctr, address)."""
    binaries = containerd_binaries()
    if binaries is None:
        pytest.skip("no containerd build (set QUANTCORE_CONTAINERD_BIN)")
    address = str(tmp_path / "containerd.sock")
    config = tmp_path / "config.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            version = 3
            root = "{tmp_path / "root"}"
            state = "{tmp_path / "state"}"
            disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime",
              "io.containerd.cri.v1.images"]
            [grpc]
              address = "{address}"
            [ttrpc]
              address = "{address}.ttrpc"
            """
        )
    )
    log = (tmp_path / "containerd.log").open("w")
    daemon = subprocess.Popen(
        [binaries / "containerd", "--config", config], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(
            [binaries / "ctr", "--address", address, "version"], capture_output=True, check=False
        ).returncode:
            assert daemon.poll() is None, (tmp_path / "containerd.log").read_text()
            assert time.monotonic() < deadline, "containerd did not answer within 60 s"
            time.sleep(0.2)
        yield binaries / "ctr", address
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()


def test_archives_load_into_containerd_by_tag_and_digest(
    built: dict[str, images.BuiltImage], containerd: tuple[Path, str]
) -> None:
    ctr, address = containerd
    pause = built["pause"]
    loaded = images.load_into_containerd(ctr, address, [pause])
    pinned = loaded[pause.ref]
    assert pinned.startswith("localhost/quantcore/pause@sha256:")
    listing = subprocess.run(
        [ctr, "--address", address, "-n", "k8s.io", "images", "ls"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    digests = images.containerd_digests(listing)
    assert digests[pause.ref] == digests[pinned] == pinned.split("@")[1]
    # A second load of the same archive changes nothing.
    assert images.load_into_containerd(ctr, address, [pause]) == loaded


def test_runtime_image_holds_the_recordings_the_replay_serves_by_default(
    built: dict[str, images.BuiltImage], runtime: Running
) -> None:
    env = dict(e.split("=", 1) for e in config(built, "runtime")["Env"])  # type: ignore[attr-defined]
    baked = env["QUANTCORE_RECORDINGS"]
    repository = Path(__file__).resolve().parents[2] / "recordings" / "binance-spot"
    listing = runtime("sh", "-c", f"cd {baked} && sha256sum *").splitlines()
    found = {line.split()[1]: line.split()[0] for line in listing}
    expected = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in repository.iterdir()
        if path.is_file()
    }
    assert found == expected
    assert {"LICENSE-MIT.txt", "README.md"} <= set(found)


def test_kafka_image_runs_the_dev_services_jars_as_its_own_user(
    built: dict[str, images.BuiltImage], kafka: Running
) -> None:
    from quantcore.devservices.kafka import kafka_jars

    cfg = config(built, "kafka")
    assert cfg["User"] == "10002:10002"
    assert cfg["Entrypoint"] == ["/usr/bin/tini", "--", "/opt/kafka/entrypoint.sh"]
    assert kafka("ls", "/opt/kafka/libs").split() == sorted(j.name for j in kafka_jars())
    assert kafka("sh", "-c", "test -x /opt/kafka/probe.sh && grep ^log.dirs= $KAFKA_CONFIG") == (
        "log.dirs=/var/lib/kafka/data\n"
    )


def test_redis_image_is_debians_redis_as_uid_999(
    built: dict[str, images.BuiltImage], redis: Running
) -> None:
    cfg = config(built, "redis")
    assert cfg["User"] == "999:999"
    assert cfg["Entrypoint"] == ["redis-server", "/etc/redis/quantcore.conf"]
    assert f"v={images.REDIS_VERSION}." in redis("redis-server", "--version")
    assert redis("id", "-u").strip() == "999"
    assert "protected-mode no" in redis("cat", "/etc/redis/quantcore.conf")
