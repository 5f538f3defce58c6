"""Static checks of images/Dockerfile.*: multi-stage, pinned bases, non-root, nothing fetched by ADD.

These read the Dockerfiles; tests/integration/test_images.py builds the images with buildah
and runs them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from quantcore.operator import api

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
DOCKERFILES = sorted(IMAGES.glob("Dockerfile.*"))


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def instructions(path: Path) -> list[Instruction]:
    """Dockerfile instructions with line continuations joined and comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        keyword, _, args = whole.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, f"{path.name}: dangling line continuation"
    return out


def build_args(instrs: list[Instruction]) -> dict[str, str]:
    """Defaults of the ARGs declared before the first FROM (the ones FROM may use)."""
    args: dict[str, str] = {}
    for ins in instrs:
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG" and "=" in ins.args:
            name, _, value = ins.args.partition("=")
            args[name.strip()] = value.strip()
    return args


def stages(instrs: list[Instruction]) -> list[list[Instruction]]:
    out: list[list[Instruction]] = []
    for ins in instrs:
        if ins.keyword == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], text)


@pytest.fixture(params=DOCKERFILES, ids=lambda p: p.name)
def dockerfile(request: pytest.FixtureRequest) -> Path:
    return request.param


# Images that build software (a virtualenv, C extensions) do so in a stage of their own; the
# others only install packaged artifacts (Debian's redis-server, Kafka's released jars).
BUILT_FROM_SOURCE = {"Dockerfile.runtime", "Dockerfile.spark"}
BUILD_TOOLS = re.compile(r"\b(gcc|cc|make|pip|go build|mvn|gradle)\b")


def test_every_image_exists() -> None:
    assert {p.name for p in DOCKERFILES} == {
        "Dockerfile.kafka",
        "Dockerfile.redis",
        "Dockerfile.runtime",
        "Dockerfile.spark",
    }


def test_is_multi_stage_and_every_base_is_pinned(dockerfile: Path) -> None:
    instrs = instructions(dockerfile)
    args = build_args(instrs)
    froms = [shlex.split(i.args) for i in instrs if i.keyword == "FROM"]
    if dockerfile.name in BUILT_FROM_SOURCE:
        assert len(froms) >= 2, "build tools must stay out of the final image: use a build stage"
    else:
        runs = [i.args for i in instrs if i.keyword == "RUN"]
        assert not [r for r in runs if BUILD_TOOLS.search(r)], "a single stage builds nothing"
    aliases: set[str] = set()
    for words in froms:
        words = [w for w in words if not w.startswith("--platform")]
        image = expand(words[0], args)
        if image in aliases:
            continue
        name, sep, tag = image.rpartition(":")
        assert sep, f"{image}: base image without a tag"
        assert "/" not in tag, f"{image}: base image without a tag"
        assert tag != "latest", f"{image}: 'latest' is not a pin"
        # A pin names a full release (x.y.z or x.y.z-variant), not a moving major line.
        assert re.match(r"^\d+\.\d+\.\d+", tag), f"{image}: tag {tag!r} is not a full version"
        if len(words) >= 3 and words[1].upper() == "AS":
            aliases.add(words[2])
        assert name


def test_final_stage_runs_as_numeric_non_root_user(dockerfile: Path) -> None:
    final = stages(instructions(dockerfile))[-1]
    users = [i.args for i in final if i.keyword == "USER"]
    assert users, "the final stage must set USER"
    uid = users[-1].split(":")[0]
    # Numeric so the kubelet can check runAsNonRoot without /etc/passwd.
    assert uid.isdigit(), f"USER {users[-1]!r} must be numeric"
    assert int(uid) != 0
    gid = users[-1].split(":")[1] if ":" in users[-1] else uid
    assert int(gid) != 0


def test_nothing_is_fetched_by_add(dockerfile: Path) -> None:
    for ins in instructions(dockerfile):
        assert ins.keyword != "ADD", (
            f"use COPY (and a verified download in RUN), not ADD {ins.args}"
        )
        if ins.keyword == "RUN":
            assert not re.search(r"\b(curl|wget)\b.*\|\s*(ba)?sh", ins.args), "no curl|sh"


def test_entrypoint_is_exec_form(dockerfile: Path) -> None:
    final = stages(instructions(dockerfile))[-1]
    entry = [i.args for i in final if i.keyword == "ENTRYPOINT"]
    assert entry
    assert entry[-1].startswith("["), "exec form, so signals reach the process"


def test_copied_sources_exist() -> None:
    for path in DOCKERFILES:
        for ins in instructions(path):
            if ins.keyword != "COPY" or "--from=" in ins.args:
                continue
            sources = shlex.split(ins.args)[:-1]
            for src in sources:
                assert (ROOT / src).exists(), f"{path.name}: COPY {src} names a missing path"


def test_spark_image_matches_the_operators_default_spark_version() -> None:
    args = build_args(instructions(IMAGES / "Dockerfile.spark"))
    default = api.Spark.model_fields["spark_version"].default
    assert args["SPARK_VERSION"] == default
    # The cluster runs the Spark that local mode and the tests run (pyproject's pin); the
    # connector jars the image gets are resolved for that same version (devservices.spark).
    assert default == importlib.metadata.version("pyspark")


def test_spark_image_holds_the_operators_main_application_file() -> None:
    default = api.Spark.model_fields["main_application_file"].default
    path = default.removeprefix("local://")
    copies = [i.args for i in instructions(IMAGES / "Dockerfile.spark") if i.keyword == "COPY"]
    assert any(c.split()[-1] == path for c in copies), f"nothing copied to {path}"


def test_runtime_requirements_follow_pyproject_without_pyspark() -> None:
    spec = importlib.util.spec_from_file_location(
        "runtime_requirements", IMAGES / "runtime_requirements.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reqs = module.runtime_requirements((ROOT / "pyproject.toml").read_text())
    names = {re.match(r"[A-Za-z0-9._-]+", r).group(0).lower() for r in reqs}  # type: ignore[union-attr]
    assert "pyspark" not in names
    assert {"kopf", "confluent-kafka", "grpcio", "redis"} <= names


def test_redis_image_takes_the_operators_arguments_as_its_uid() -> None:
    """The operator's StatefulSet passes only args and runs as uid 999."""
    final = stages(instructions(IMAGES / "Dockerfile.redis"))[-1]
    entry = json.loads([i.args for i in final if i.keyword == "ENTRYPOINT"][-1])
    assert entry[0] == "redis-server"
    assert all(not word.startswith("--") for word in entry[1:])  # a config file, then the args
    assert [i.args for i in final if i.keyword == "USER"][-1] == "999:999"
    redis = planner_redis_container()
    assert redis["securityContext"]["runAsUser"] == 999
    assert "command" not in redis


def test_kafka_image_holds_the_probe_its_pods_run(tmp_path: Path) -> None:
    from quantcore.devcluster import platformdeps

    security = platformdeps.kafka_security(tmp_path, "ns")
    manifests = platformdeps.kafka_manifests("ns", "img", "", security)
    statefulset = next(m for m in manifests if m["kind"] == "StatefulSet")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    probe = container["readinessProbe"]["exec"]["command"][0]
    copies = [i.args for i in instructions(IMAGES / "Dockerfile.kafka") if i.keyword == "COPY"]
    assert any(c.split()[-1] == probe for c in copies), f"nothing copied to {probe}"


def planner_redis_container() -> dict[str, Any]:
    from quantcore.operator import planner

    statefulset = planner.redis_objects(planner.sample_feed(), 2)[0]
    container: dict[str, Any] = statefulset["spec"]["template"]["spec"]["containers"][0]
    return container
