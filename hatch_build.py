"""Build hook: compile proto/ into gen/ (Python messages, gRPC stubs and type stubs), and the
feed's C extensions (workloads/quantcore/feed/_*.c) in place beside their sources.

Generated code and binaries are build products: never edited by hand nor committed. An
extension that does not compile (no C compiler) is skipped with a warning: every one has a
pure-Python twin that the feed then uses, slower (tests/unit/feed/test_native.py says whether CI
built them).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
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


NATIVE_DIR = Path("workloads/quantcore/feed")


def compile_extensions(root: Path) -> list[Path]:
    """Each NATIVE_DIR/_name.c -> _name<EXT_SUFFIX> beside it; returns the ones built."""
    cc = shlex.split(sysconfig.get_config_var("LDSHARED") or "cc -shared")
    include = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    built = []
    for source in sorted((root / NATIVE_DIR).glob("_*.c")):
        target = source.with_name(source.stem + suffix)
        args = [
            *cc,
            "-O2",
            "-fPIC",
            "-std=c11",
            "-Wall",
            f"-I{include}",
            str(source),
            "-o",
            str(target),
        ]
        try:
            subprocess.run(args, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            print(
                f"warning: {source.name} not compiled, its Python twin will be used: {detail}",
                file=sys.stderr,
            )
            target.unlink(missing_ok=True)
            continue
        built.append(target)
    return built


class ProtoBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        compile_protos(root)
        built = compile_extensions(root)
        if built:
            # Binaries make the wheel platform-specific; they are git-ignored, so name them.
            build_data["pure_python"] = False
            build_data["infer_tag"] = True
            build_data["artifacts"].extend(str(p.relative_to(root)) for p in built)


if __name__ == "__main__":
    compile_protos(Path(__file__).parent)
    compile_extensions(Path(__file__).parent)
