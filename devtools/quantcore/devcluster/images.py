"""The test ground's container images, built with buildah and exported as docker archives.

- runtime: images/Dockerfile.runtime (operator, feed shards, server), on Debian bases;
- spark: images/Dockerfile.spark (pyspark's distribution + a JRE + the Kafka connector and
  S3A jars);
- spark-operator: the spark image plus the kubeflow spark-operator binary;
- pause: the pod sandbox's process (images/pause.c, static);
- kafka: images/Dockerfile.kafka (one KRaft broker from the dev services' Kafka jars, a JRE);
- redis: images/Dockerfile.redis (Debian's redis-server, uid 999).

Each image is cached by content: the hash of its Dockerfile, the build-context files it
copies, its bases' recipes and its build arguments. An archive for that hash means nothing is
built, so a second `make images` only hashes files. `load_into_containerd` imports the
archives into a node's containerd, where pods use them with imagePullPolicy IfNotPresent or
Never.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from quantcore.devcluster import rootfs, sparkoperator, versions
from quantcore.devcluster.buildah import Buildah, BuildahError
from quantcore.devservices import kafka as devkafka
from quantcore.devservices.cache import cache_lock

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "quantcore"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Mounted for RUN steps only, at paths every final base already has (a mount point the base
# lacks would stay behind in the image as an empty file or directory).
BUILD_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
BUILD_WHEELS = "/mnt"
# pip settings a build inherits from this machine, passed as the build stages' PIP_* ARGs.
FORWARDED_PIP_SETTINGS = {
    "index-url": "PIP_INDEX_URL",
    "extra-index-url": "PIP_EXTRA_INDEX_URL",
    "trusted-host": "PIP_TRUSTED_HOST",
    "timeout": "PIP_DEFAULT_TIMEOUT",
    "default-timeout": "PIP_DEFAULT_TIMEOUT",
}
PAUSE_REF = "localhost/quantcore/pause:1"
CONTENT_REPOSITORY = "localhost/quantcore/build"
# Archives of other contents (other checkouts, earlier commits) unused this long are removed.
STALE_ARCHIVE_SECONDS = 2 * 24 * 3600
# ...and beyond the few most recently used of each image, whatever their age: an image is up
# to a GiB, and every edit of the sources makes a new one.
KEPT_ARCHIVES_PER_IMAGE = 3
SPARK_OPERATOR_REPOSITORY = "localhost/quantcore/spark-operator"
SPARK_UID = "185:185"
# The sandbox process holds namespaces only: nobody's uid.
PAUSE_UID = "65535:65535"
# Tagged with what they run: the dev services' Kafka release, the Redis line Debian ships
# (images/Dockerfile.redis fails to build if the package is another).
KAFKA_REF = f"localhost/quantcore/kafka:{devkafka.KAFKA_VERSION}"
REDIS_VERSION = "7.0"
REDIS_REF = f"localhost/quantcore/redis:{REDIS_VERSION}-{rootfs.SUITE}"


class ImageBuildError(RuntimeError):
    """An image could not be built; the message says which and why."""


@dataclass(frozen=True)
class BuiltImage:
    name: str
    ref: str  # the name pods use, with imagePullPolicy IfNotPresent or Never
    key: str  # content hash the archive was built from
    archive: Path  # docker-archive tar, importable with `ctr images import`
    archive_bytes: int
    build_seconds: float  # what building it took when it was built (0 if it never was here)

    @property
    def content_ref(self) -> str:
        """This build's own name in the build store. Checkouts sharing the cache build different
        contents under the same `ref`; this name always means this content."""
        return f"{CONTENT_REPOSITORY}/{self.name}:{self.key[:16]}"


# ---- pure logic -------------------------------------------------------------------------------


def copy_sources(dockerfile: str) -> list[str]:
    """Build-context paths a Dockerfile's COPY/ADD instructions read (not --from=...)."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    sources: list[str] = []
    for line in joined.splitlines():
        words = shlex.split(line.strip(), comments=True) if line.strip() else []
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        flags = [w for w in words[1:] if w.startswith("--")]
        if any(f.startswith("--from=") for f in flags):
            continue
        paths = [w for w in words[1:] if not w.startswith("--")]
        sources += [p.rstrip("/") for p in paths[:-1]]
    return sorted(set(sources))


def content_key(parts: Mapping[str, str]) -> str:
    """One hash over named parts; any change in a name or a value changes it."""
    digest = hashlib.sha256()
    for name, value in sorted(parts.items()):
        digest.update(f"{name}\0{value}\0".encode())
    return digest.hexdigest()


def files_digest(root: Path, files: Iterable[str]) -> str:
    """Hash of each file's path (relative to root), mode and content."""
    digest = hashlib.sha256()
    for relative in sorted(files):
        path = root / relative
        digest.update(f"{relative}\0{path.stat().st_mode & 0o777:o}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def pip_settings(config_list: str) -> dict[str, str]:
    """`pip config list` output (`global.index-url='...'`, `:env:.timeout='60'`) as key -> value;
    environment values win over files, as they do for pip itself."""
    settings: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in config_list.splitlines():
        name, sep, raw = line.partition("=")
        if not sep:
            continue
        key = name.rsplit(".", 1)[-1]
        value = raw.strip().strip("'\"")
        (env if name.startswith(":env:") else settings)[key] = value
    return {**settings, **env}


def pip_build_args(
    settings: Mapping[str, str], *, cert: str, find_links: str | None
) -> dict[str, str]:
    """The PIP_* build arguments of a build: this machine's index settings, its CA bundle (HTTPS
    may pass a proxy with its own CA) and, if given, a directory of prebuilt wheels. Host paths
    (a find-links directory of its own) stay out."""
    args = {
        FORWARDED_PIP_SETTINGS[key]: value
        for key, value in settings.items()
        if key in FORWARDED_PIP_SETTINGS
    }
    args["PIP_CERT"] = cert
    if find_links:
        args["PIP_FIND_LINKS"] = find_links
    return args


def chart_image_refs(values: str, chart: str) -> dict[str, str]:
    """The runtime and Spark image references the chart uses by default (tag = appVersion)."""
    parsed_values = yaml.safe_load(values)
    app_version = str(yaml.safe_load(chart)["appVersion"])

    def ref(section: str) -> str:
        image = parsed_values[section]
        return f"{image['repository']}:{image.get('tag') or app_version}"

    return {"runtime": ref("image"), "spark": ref("sparkImage")}


def containerd_digests(images_ls: str) -> dict[str, str]:
    """`ctr images ls` output -> image name -> manifest digest."""
    digests: dict[str, str] = {}
    for line in images_ls.splitlines()[1:]:
        words = line.split()
        if len(words) >= 3 and words[2].startswith("sha256:"):
            digests[words[0]] = words[2]
    return digests


def digest_reference(ref: str, digest: str) -> str:
    """`registry.invalid/a/b:1.0` + `sha256:...` -> `registry.invalid/a/b@sha256:...`."""
    name, _, tag = ref.rpartition(":")
    repository = name if name and "/" not in tag else ref
    return f"{repository.split('@')[0]}@{digest}"


# ---- building --------------------------------------------------------------------------------


def images_dir() -> Path:
    return versions.cache_root() / "images"


def build_all() -> dict[str, BuiltImage]:
    """Every image the test ground runs, built when its content changed, as archives."""
    work = images_dir()
    with cache_lock(work):
        builder = _Builder(work)
        refs = chart_image_refs(
            (CHART / "values.yaml").read_text(), (CHART / "Chart.yaml").read_text()
        )
        runtime = builder.dockerfile_image(
            "runtime",
            refs["runtime"],
            bases={"BUILD_BASE": rootfs.BUILD, "RUNTIME_BASE": rootfs.PYTHON},
        )
        spark = builder.dockerfile_image(
            "spark",
            refs["spark"],
            bases={"BUILD_BASE": rootfs.BUILD, "SPARK_BASE": rootfs.SPARK},
            build_contexts={"connector-jars": _connector_jars(work)},
            wheels=_pyspark_wheel(work),
        )
        operator = builder.spark_operator_image(spark)
        pause = builder.pause_image()
        # The Spark base (Debian, a JRE, tini): a node stores that layer once for both.
        kafka = builder.dockerfile_image(
            "kafka",
            KAFKA_REF,
            bases={"KAFKA_BASE": rootfs.SPARK},
            build_contexts={"kafka-dist": _kafka_dist(work)},
        )
        redis = builder.dockerfile_image(
            "redis",
            REDIS_REF,
            bases={"REDIS_BASE": rootfs.REDIS},
            build_args={"REDIS_VERSION": REDIS_VERSION},
        )
        builder.buildah.prune_dangling()
    return {image.name: image for image in (runtime, spark, operator, pause, kafka, redis)}


def ensure_in_store(image: BuiltImage) -> Buildah:
    """The image store holding `image` as `image.content_ref` (restored from its archive if
    the store no longer has it)."""
    buildah = Buildah.under(images_dir())
    if not buildah.has_image(image.content_ref):
        buildah.pull_archive(image.archive)
        buildah.run(["tag", image.ref, image.content_ref])
    return buildah


class _Builder:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.buildah = Buildah.under(work)
        self.archives = work / "archives"
        self.archives.mkdir(parents=True, exist_ok=True)
        self.mirror = rootfs.host_mirror()

    def cached(self, name: str, key: str) -> BuiltImage | None:
        stem = f"{name}-{key[:16]}"
        record, tar = self.archives / f"{stem}.json", self.archives / f"{stem}.tar"
        if not (record.exists() and tar.exists()):
            return None
        record.touch()  # in use: see _prune_stale
        return BuiltImage(**{**json.loads(record.read_text()), "archive": tar})

    def archive(self, name: str, ref: str, key: str, started: float) -> BuiltImage:
        tar = self.archives / f"{name}-{key[:16]}.tar"
        self.buildah.push_archive(ref, tar)
        image = BuiltImage(
            name=name,
            ref=ref,
            key=key,
            archive=tar,
            archive_bytes=tar.stat().st_size,
            build_seconds=round(time.monotonic() - started, 1),
        )
        record = {**asdict(image), "archive": tar.name}
        (self.archives / f"{name}-{key[:16]}.json").write_text(json.dumps(record, indent=2))
        self.buildah.run(["tag", ref, image.content_ref])
        self.prune_stale(name)
        return image

    def prune_stale(self, name: str) -> None:
        """Remove this image's archives (and store entries) that no build used for a while,
        or that are older than its few most recently used: what another checkout or an
        earlier commit built."""
        now = time.time()
        # `spark-*` would match spark-operator's too: the name before the key must be `name`.
        mine = [
            r for r in self.archives.glob(f"{name}-*.json") if r.stem.rpartition("-")[0] == name
        ]
        records = sorted(mine, key=lambda r: r.stat().st_mtime, reverse=True)
        for rank, record in enumerate(records):
            recent = now - record.stat().st_mtime < STALE_ARCHIVE_SECONDS
            if recent and rank < KEPT_ARCHIVES_PER_IMAGE:
                continue
            stale = BuiltImage(**{**json.loads(record.read_text()), "archive": Path()})
            if self.buildah.has_image(stale.content_ref):
                self.buildah.run(["rmi", stale.content_ref])
            record.with_suffix(".tar").unlink(missing_ok=True)
            record.unlink()

    def dockerfile_image(
        self,
        name: str,
        ref: str,
        *,
        bases: Mapping[str, rootfs.Base],
        build_contexts: Mapping[str, Path] | None = None,
        wheels: Path | None = None,
        build_args: Mapping[str, str] | None = None,
    ) -> BuiltImage:
        dockerfile = ROOT / "images" / f"Dockerfile.{name}"
        text = dockerfile.read_text()
        files = _context_files(copy_sources(text))
        build_args = {
            **(build_args or {}),
            **{arg: rootfs.base_ref(base, self.mirror) for arg, base in bases.items()},
        }
        parts = {
            "dockerfile": text,
            "context": files_digest(ROOT, files),
            **{f"arg:{k}": v for k, v in build_args.items()},
            **{
                f"context:{k}": files_digest(p, _files_in(p))
                for k, p in (build_contexts or {}).items()
            },
        }
        if wheels is not None:
            parts["wheels"] = files_digest(wheels, sorted(p.name for p in wheels.glob("*.whl")))
        key = content_key(parts)
        cached = self.cached(name, key)
        if cached is not None:
            return cached
        started = time.monotonic()
        for base in bases.values():
            rootfs.ensure_base(self.buildah, base, self.work / "rootfs", self.mirror)
        with tempfile.TemporaryDirectory(dir=self.work, prefix=f"context-{name}-") as tmp:
            context = Path(tmp) / "context"
            for relative in files:
                target = context / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / relative, target)
            # The Dockerfile text that was hashed, beside the context rather than in it.
            hashed_dockerfile = Path(tmp) / dockerfile.name
            hashed_dockerfile.write_text(text)
            volumes = [f"{HOST_CA_BUNDLE}:{BUILD_CA_BUNDLE}:ro"]
            if wheels is not None:
                volumes.append(f"{wheels}:{BUILD_WHEELS}:ro")
            pip_args = pip_build_args(
                _host_pip_settings(),
                cert=BUILD_CA_BUNDLE,
                find_links=BUILD_WHEELS if wheels else None,
            )
            try:
                self.buildah.bud(
                    dockerfile=hashed_dockerfile,
                    context=context,
                    ref=ref,
                    # Network settings only: not part of the content key.
                    build_args={**build_args, **pip_args},
                    build_contexts=build_contexts or {},
                    volumes=volumes,
                )
            except BuildahError as error:
                raise ImageBuildError(f"building the {name} image failed: {error}") from error
        return self.archive(name, ref, key, started)

    def spark_operator_image(self, spark: BuiltImage) -> BuiltImage:
        binary = sparkoperator.ensure_spark_operator()
        ref = f"{SPARK_OPERATOR_REPOSITORY}:{versions.SPARK_OPERATOR}"
        key = content_key(
            {"spark": spark.key, "binary": files_digest(binary.parent, [binary.name])}
        )
        cached = self.cached("spark-operator", key)
        if cached is not None:
            return cached
        started = time.monotonic()
        ensure_in_store(spark)
        with self.buildah.container(spark.content_ref) as container:
            target = "/usr/local/bin/spark-operator"
            self.buildah.run(["copy", "--chmod", "0755", container, str(binary), target])
            # The controller runs spark-submit (SPARK_HOME is the Spark image's) and writes
            # pod templates under /tmp/spark: /tmp is an emptyDir in its pod.
            self.buildah.run(
                [
                    "config",
                    "--entrypoint",
                    json.dumps(["/usr/bin/tini", "--", target]),
                    "--cmd",
                    json.dumps(["controller", "start"]),
                    "--user",
                    SPARK_UID,
                    "--workingdir",
                    "/tmp",
                    "--label",
                    "org.opencontainers.image.title=quantcore-spark-operator",
                    "--label",
                    f"org.opencontainers.image.version={versions.SPARK_OPERATOR}",
                    container,
                ]
            )
            self.buildah.commit(container, ref)
        return self.archive("spark-operator", ref, key, started)

    def pause_image(self) -> BuiltImage:
        source = ROOT / "images" / "pause.c"
        compiler = shutil.which("gcc")
        if compiler is None:
            raise ImageBuildError("gcc is not installed (the pause image is compiled with it)")
        flags = ["-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror"]
        version = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, check=True
        ).stdout.splitlines()[0]
        key = content_key({"source": source.read_text(), "gcc": version, "flags": " ".join(flags)})
        cached = self.cached("pause", key)
        if cached is not None:
            return cached
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=self.work, prefix="pause-") as tmp:
            binary = Path(tmp) / "pause"
            done = subprocess.run(
                [compiler, *flags, "-o", str(binary), str(source)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise ImageBuildError(f"compiling {source} failed:\n{done.stderr}")
            with self.buildah.container("scratch") as container:
                self.buildah.run(["copy", "--chmod", "0755", container, str(binary), "/pause"])
                self.buildah.run(
                    [
                        "config",
                        "--entrypoint",
                        json.dumps(["/pause"]),
                        "--user",
                        PAUSE_UID,
                        "--label",
                        "org.opencontainers.image.title=quantcore-pause",
                        container,
                    ]
                )
                self.buildah.commit(container, PAUSE_REF)
        return self.archive("pause", PAUSE_REF, key, started)


def _context_files(sources: Sequence[str]) -> list[str]:
    """The files under `sources` that git tracks or would track (build products and caches,
    which .gitignore names, stay out of the image and out of its hash)."""
    done = subprocess.run(
        [
            "git",
            "-C",
            str(ROOT),
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
            *sources,
        ],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise ImageBuildError(f"listing the build context needs a git checkout: {done.stderr!r}")
    files = sorted({f for f in done.stdout.decode().split("\0") if f and (ROOT / f).is_file()})
    missing = [s for s in sources if not any(f == s or f.startswith(s + "/") for f in files)]
    if missing:
        raise ImageBuildError(f"build context lacks {', '.join(missing)}")
    return files


def _files_in(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def _host_pip_settings() -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    )
    return pip_settings(done.stdout) if done.returncode == 0 else {}


def _connector_jars(work: Path) -> Path:
    """The Kafka connector and S3A jars pyspark lacks (resolved by mvn into the cache), staged
    into a directory of their own: the spark image's `connector-jars` build context."""
    from quantcore.devservices.spark import s3a_jars, spark_jars

    jars = [*spark_jars(), *s3a_jars()]
    staged = work / "connector-jars"
    wanted = {jar.name for jar in jars}
    staged.mkdir(parents=True, exist_ok=True)
    for present in staged.iterdir():
        if present.name not in wanted:
            present.unlink()
    for jar in jars:
        target = staged / jar.name
        if not target.exists() or target.stat().st_size != jar.stat().st_size:
            target.unlink(missing_ok=True)
            try:
                # A link, not a copy: the AWS SDK bundle alone is hundreds of MB.
                os.link(jar, target)
            except OSError:
                shutil.copy2(jar, target)
    return staged


def _kafka_dist(work: Path) -> Path:
    """The kafka image's `kafka-dist` build context: the dev services' Kafka jars (resolved by
    mvn into the cache) in libs/, and in config/ their log4j2 configuration and a default
    server.properties (a broker advertised as localhost:9092; pods mount their own)."""
    jars = devkafka.kafka_jars()
    staged = work / "kafka-dist"
    libs, config = staged / "libs", staged / "config"
    libs.mkdir(parents=True, exist_ok=True)
    config.mkdir(parents=True, exist_ok=True)
    wanted = {jar.name for jar in jars}
    for present in libs.iterdir():
        if present.name not in wanted:
            present.unlink()
    for jar in jars:
        target = libs / jar.name
        if not target.exists() or target.stat().st_size != jar.stat().st_size:
            shutil.copy2(jar, target)
    files = {
        "log4j2.properties": devkafka.log4j_properties("INFO"),
        "server.properties": devkafka.container_properties(f"localhost:{devkafka.CONTAINER_PORT}"),
    }
    for name, text in files.items():
        if not (config / name).exists() or (config / name).read_text() != text:
            (config / name).write_text(text)
    return staged


def _pyspark_wheel(work: Path) -> Path:
    """pyspark's wheel for the pinned version, built once here (PyPI has only its 400 MB source
    archive): the spark image's build installs it from this directory."""
    from importlib.metadata import version

    pinned = version("pyspark")
    directory = work / "wheels" / f"pyspark-{pinned}"
    with cache_lock(directory.parent):
        if not list(directory.glob(f"pyspark-{pinned}-*.whl")):
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "wheel",
                    "-q",
                    "--no-deps",
                    "-w",
                    str(directory),
                    f"pyspark=={pinned}",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise ImageBuildError(f"building the pyspark {pinned} wheel failed:\n{done.stderr}")
    return directory


# ---- loading into a node ----------------------------------------------------------------------


def load_into_containerd(
    ctr: Path,
    address: str,
    images: Iterable[BuiltImage],
    *,
    namespace: str = "k8s.io",
    snapshotter: str | None = None,
) -> dict[str, str]:
    """Import the archives into the containerd at `address` (the kubelet's namespace by
    default); returns each image's reference -> the same image by digest (`repo@sha256:...`).

    Pods name the images by either reference with imagePullPolicy IfNotPresent or Never: no
    registry serves them. The digest name is created here (an import names images by tag
    only), so the kubelet's runtime finds a digest reference locally as well.
    """
    base = [str(ctr), "--address", address, "--namespace", namespace]
    wanted = list(images)
    for image in wanted:
        command = [*base, "images", "import"]
        if snapshotter:
            command += ["--snapshotter", snapshotter]
        _ctr([*command, str(image.archive)], f"importing {image.archive} into {address}")
    digests = containerd_digests(_ctr([*base, "images", "ls"], f"listing images in {address}"))
    absent = [image.ref for image in wanted if image.ref not in digests]
    if absent:
        raise ImageBuildError(f"containerd at {address} lacks {', '.join(absent)} after import")
    by_digest = {image.ref: digest_reference(image.ref, digests[image.ref]) for image in wanted}
    for ref, pinned in by_digest.items():
        if digests.get(pinned) != digests[ref]:
            _ctr([*base, "images", "tag", "--force", ref, pinned], f"naming {pinned}")
    return by_digest


def _ctr(command: Sequence[str], what: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ImageBuildError(f"{what} failed:\n{done.stderr.strip()}")
    return done.stdout
