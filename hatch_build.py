"""Build hook: compile proto/ into gen/ (Python messages, gRPC stubs and type stubs).

Generated code is a build product: it is never edited by hand nor committed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def compile_protos(root: Path) -> None:
    from grpc_tools import protoc  # build-time dependency (see [build-system])

    # protoc finds the mypy plugins on PATH; they sit beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    proto_root = root / "proto"
    out = root / "gen"
    out.mkdir(exist_ok=True)
    sources = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{proto_root}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed on " + " ".join(sources))


class ProtoBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        compile_protos(Path(self.root))


if __name__ == "__main__":
    compile_protos(Path(__file__).parent)
