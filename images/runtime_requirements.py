"""Print pyproject.toml's runtime dependencies minus pyspark, for the slim runtime image.

The operator, feed shards and server never import pyspark; the stream job runs in the Spark
image. Reading pyproject.toml keeps it the one list of dependencies.
"""

from __future__ import annotations

import re
import sys
import tomllib

# Dependencies the slim image leaves out, by distribution name.
EXCLUDED = {"pyspark"}


def runtime_requirements(pyproject_text: str, excluded: set[str] = EXCLUDED) -> list[str]:
    deps: list[str] = tomllib.loads(pyproject_text)["project"]["dependencies"]
    name = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")
    kept = []
    for dep in deps:
        match = name.match(dep)
        if match is None:
            raise ValueError(f"unreadable dependency {dep!r}")
        if match.group(0).lower() not in excluded:
            kept.append(dep)
    return kept


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        print("\n".join(runtime_requirements(f.read())))
