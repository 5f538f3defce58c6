"""Pure logic of the image builds: what a Dockerfile reads, content keys, the apt mirror and
pip settings a build inherits, the chart's image names, go.mod replaces, ctr's listing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from quantcore.devcluster import images, rootfs
from quantcore.devcluster.binaries import BuildError
from quantcore.devcluster.sparkoperator import same_path_replaces

ROOT = Path(__file__).resolve().parents[2]


def test_copy_sources_of_the_runtime_dockerfile() -> None:
    sources = images.copy_sources((ROOT / "images" / "Dockerfile.runtime").read_text())
    assert sources == [
        "README.md",
        "contracts",
        "devtools",
        "hatch_build.py",
        "images/runtime_requirements.py",
        "operator",
        "proto",
        "pyproject.toml",
        "recordings/binance-spot",
        "src",
        "workloads",
    ]


def test_copy_sources_skip_other_stages_and_named_contexts() -> None:
    text = (ROOT / "images" / "Dockerfile.spark").read_text()
    sources = images.copy_sources(text)
    assert "images/spark-entrypoint.sh" in sources
    assert "images/stream_main.py" in sources
    assert not any("connector" in s or s.startswith("/opt") for s in sources)


def test_copy_sources_reads_continued_and_flagged_instructions() -> None:
    text = "FROM x AS a\nCOPY --chown=1:1 a.txt \\\n  b/ /dst/\nCOPY --from=a /x /y\nADD c /c\n"
    assert images.copy_sources(text) == ["a.txt", "b", "c"]


def test_content_key_changes_with_any_part() -> None:
    key = images.content_key({"a": "1", "b": "2"})
    assert key == images.content_key({"b": "2", "a": "1"})
    assert key != images.content_key({"a": "1", "b": "3"})
    assert key != images.content_key({"a": "1", "c": "2"})
    # Names and values cannot be shifted into one another.
    assert images.content_key({"ab": "c"}) != images.content_key({"a": "bc"})


def test_files_digest_sees_content_and_mode(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("one")
    first = images.files_digest(tmp_path, ["f"])
    (tmp_path / "f").write_text("two")
    second = images.files_digest(tmp_path, ["f"])
    (tmp_path / "f").chmod(0o755)
    third = images.files_digest(tmp_path, ["f"])
    assert len({first, second, third}) == 3


def test_mirror_from_deb822_sources() -> None:
    text = (
        "Types: deb\n# a comment\nURIs: http://mirror.invalid/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n"
    )
    assert rootfs.mirror_from_sources(text, "bookworm") == "http://mirror.invalid/debian"
    assert rootfs.mirror_from_sources(text, "trixie") is None


def test_mirror_from_one_line_sources() -> None:
    text = (
        "deb-src http://src.invalid/debian bookworm main\n"
        "deb [signed-by=/k.gpg] http://mirror.invalid/debian bookworm main\n"
    )
    assert rootfs.mirror_from_sources(text, "bookworm") == "http://mirror.invalid/debian"


def test_base_refs_follow_the_recipe() -> None:
    one = rootfs.base_ref(rootfs.PYTHON, "http://a.invalid/debian")
    assert one.startswith("localhost/quantcore/base-python:")
    assert one != rootfs.base_ref(rootfs.PYTHON, "http://b.invalid/debian")
    assert one != rootfs.base_ref(rootfs.Base("python", ("python3",)), "http://a.invalid/debian")


def test_every_base_installs_the_same_python() -> None:
    # The virtualenv made on the build base links to /usr/bin/python3: each base needs it.
    for base in (rootfs.PYTHON, rootfs.BUILD, rootfs.SPARK):
        assert "python3" in base.packages
    assert "openjdk-17-jre-headless" not in rootfs.PYTHON.packages
    assert "gcc" not in rootfs.PYTHON.packages + rootfs.SPARK.packages


def test_pip_settings_prefer_the_environment() -> None:
    listed = (
        "global.cert='/etc/ssl/certs/ca-certificates.crt'\n"
        "global.index-url='https://index.invalid/simple'\n"
        ":env:.index-url='https://env.invalid/simple'\n"
        ":env:.default-timeout='180'\n"
        ":env:.find-links='/opt/wheels'\n"
    )
    settings = images.pip_settings(listed)
    assert settings["index-url"] == "https://env.invalid/simple"
    # The host's own paths never reach the build: the mounted bundle and wheels replace them.
    assert images.pip_build_args(settings, cert="/ca.crt", find_links="/wheels") == {
        "PIP_INDEX_URL": "https://env.invalid/simple",
        "PIP_DEFAULT_TIMEOUT": "180",
        "PIP_CERT": "/ca.crt",
        "PIP_FIND_LINKS": "/wheels",
    }
    assert images.pip_build_args({}, cert="/ca.crt", find_links=None) == {"PIP_CERT": "/ca.crt"}


def test_every_forwarded_pip_setting_is_a_build_stage_arg() -> None:
    for name in ("runtime", "spark"):
        text = (ROOT / "images" / f"Dockerfile.{name}").read_text()
        declared = set(re.findall(r"^ARG (PIP_\w+)$", text, re.M))
        assert {*images.FORWARDED_PIP_SETTINGS.values(), "PIP_CERT", "PIP_FIND_LINKS"} <= declared


def test_chart_image_refs_are_the_charts_defaults() -> None:
    chart_dir = ROOT / "charts" / "quantcore"
    values = (chart_dir / "values.yaml").read_text()
    chart = (chart_dir / "Chart.yaml").read_text()
    refs = images.chart_image_refs(values, chart)
    parsed = yaml.safe_load(values)
    version = yaml.safe_load(chart)["appVersion"]
    assert refs == {
        "runtime": f"{parsed['image']['repository']}:{version}",
        "spark": f"{parsed['sparkImage']['repository']}:{version}",
    }


def test_containerd_digests_parse_ctr_listing() -> None:
    listing = (
        "REF                                  TYPE                                       "
        "DIGEST                                                                  SIZE      "
        "PLATFORMS   LABELS\n"
        "localhost/quantcore/pause:1          application/vnd.docker.distribution.manifest.v2+json "
        "sha256:" + "a" * 64 + " 300.1 KiB linux/amd64 -\n"
    )
    assert images.containerd_digests(listing) == {
        "localhost/quantcore/pause:1": "sha256:" + "a" * 64
    }


def test_same_path_replaces_of_a_gomod() -> None:
    gomod = (
        "module example.invalid/x\n\ngo 1.24.1\n\nreplace (\n"
        "\tk8s.io/api => k8s.io/api v0.32.5\n"
        "\tk8s.io/client-go v0.1.0 => k8s.io/client-go v0.32.5 // pinned\n)\n"
        "replace golang.org/x/net => golang.org/x/net v0.44.0\n"
    )
    assert same_path_replaces(gomod) == {
        "k8s.io/api": "v0.32.5",
        "k8s.io/client-go": "v0.32.5",
        "golang.org/x/net": "v0.44.0",
    }


@pytest.mark.parametrize(
    "line", ["k8s.io/api => ../api", "k8s.io/api => example.invalid/fork v1.0.0"]
)
def test_replaces_a_wrapper_cannot_carry_are_refused(line: str) -> None:
    with pytest.raises(BuildError, match="unsupported replace"):
        same_path_replaces(f"module m\n\nreplace {line}\n")


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("registry.invalid/a/b:1.0", "registry.invalid/a/b@sha256:ab"),
        ("localhost:5000/pause:1", "localhost:5000/pause@sha256:ab"),
        ("localhost:5000/pause", "localhost:5000/pause@sha256:ab"),
        ("pause@sha256:00", "pause@sha256:ab"),
    ],
)
def test_digest_reference_replaces_the_tag(ref: str, expected: str) -> None:
    assert images.digest_reference(ref, "sha256:ab") == expected
