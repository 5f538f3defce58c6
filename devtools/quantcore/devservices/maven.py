"""Jar sets resolved with mvn from a generated pom and cached by name and version.

A jar set is a directory of jars plus a manifest (`jars.txt`) written last, so a half-done
download is never mistaken for a finished one.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from quantcore.devservices.cache import cache_lock, cache_root

# Pinned so the same pom resolves the same way on every machine.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MANIFEST = "jars.txt"


class ResolutionError(RuntimeError):
    """mvn could not resolve a jar set; the message carries mvn's own output."""


@dataclass(frozen=True)
class Artifact:
    group: str
    name: str
    version: str

    @classmethod
    def parse(cls, coordinates: str) -> Artifact:
        """Parse `group:artifact:version`."""
        parts = coordinates.split(":")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"expected group:artifact:version, got {coordinates!r}")
        return cls(*parts)


def pom_for(key: str, artifacts: list[Artifact]) -> str:
    """A pom whose only job is to declare `artifacts` as dependencies."""
    deps = "\n".join(
        "    <dependency><groupId>{}</groupId><artifactId>{}</artifactId>"
        "<version>{}</version></dependency>".format(*map(escape, (a.group, a.name, a.version)))
        for a in artifacts
    )
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>quantcore.devservices</groupId>
  <artifactId>{escape(key)}</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{deps}
  </dependencies>
</project>
"""


def resolve(key: str, coordinates: list[str]) -> list[Path]:
    """The jars of `coordinates` and their runtime dependencies, downloaded once per key.

    `key` must change whenever `coordinates` do (put the versions in it).
    """
    artifacts = [Artifact.parse(c) for c in coordinates]
    home = cache_root() / "jars" / key
    manifest = home / MANIFEST
    with cache_lock(home):
        if not manifest.exists():
            _download(home, key, artifacts)
        names = manifest.read_text().split()
    return [home / "lib" / name for name in names]


def _download(home: Path, key: str, artifacts: list[Artifact]) -> None:
    if shutil.which("mvn") is None:
        raise ResolutionError("mvn is not installed (make setup-services installs it)")
    lib = home / "lib"
    shutil.rmtree(lib, ignore_errors=True)
    (home / "pom.xml").write_text(pom_for(key, artifacts))
    command = [
        "mvn",
        "-B",
        "-q",
        "-f",
        str(home / "pom.xml"),
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={lib}",
        "-DincludeScope=runtime",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()
        tail = "\n".join(output[-30:])
        raise ResolutionError(f"mvn failed to resolve {key} (exit {done.returncode}):\n{tail}")
    names = sorted(p.name for p in lib.glob("*.jar"))
    (home / MANIFEST).write_text("\n".join(names) + "\n")
