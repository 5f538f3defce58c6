"""Builds the test ground's binaries from Go modules, once per version: etcd, the Kubernetes
control plane and node commands, helm, containerd, CoreDNS and kube-router (NetworkPolicies).

k8s.io/kubernetes cannot be `go install`ed at a tag: its go.mod points every k8s.io/* staging
module at ./staging/..., which a module download does not contain. The usual way out is a
small wrapper module that requires k8s.io/kubernetes and replaces each staging module with
its published v0.x release; etcd's server module has sibling replaces too, so it gets a
wrapper of its own. The wrapper's go.mod is generated here; nothing built lands in the repo.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from quantcore.devcluster import versions
from quantcore.devservices.cache import cache_lock

# One `go build` of the wrapper module makes all five: they share most of their packages.
KUBE_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
)
CONTAINERD_COMMANDS = ("containerd", "containerd-shim-runc-v2", "ctr")
# Debian's runc and CNI plugins (runc, containernetworking-plugins): crun refuses this
# machine's hybrid cgroups, and the plugins need no build.
RUNC = Path("/usr/sbin/runc")
CNI_PLUGINS = Path("/usr/lib/cni")
IPSET = Path("/usr/sbin/ipset")  # kube-router runs it
# Builds run beside other work on a small machine: keep them polite.
NICE = ("nice", "-n", "10")


class BuildError(RuntimeError):
    """A binary could not be built; the message carries the command and its output."""


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    helm: Path
    kube_scheduler: Path


@dataclass(frozen=True)
class NodeBinaries:
    """What a node runs beside the control plane."""

    kubelet: Path
    kube_proxy: Path
    containerd: Path
    containerd_shim: Path
    ctr: Path
    coredns: Path
    kube_router: Path
    runc: Path
    cni_plugins: Path


def staging_modules(kubernetes_gomod: str) -> list[str]:
    """The k8s.io/* modules k8s.io/kubernetes replaces with ./staging/src/... paths."""
    modules = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", kubernetes_gomod, re.M)
    if not modules:
        raise BuildError("k8s.io/kubernetes go.mod has no staging replace directives")
    return sorted(set(modules))


def go_directive(gomod: str) -> str:
    match = re.search(r"^go\s+(\S+)\s*$", gomod, re.M)
    if match is None:
        raise BuildError("go.mod has no go directive")
    return match.group(1)


def wrapper_gomod(
    *,
    go: str,
    requires: Mapping[str, str],
    replaces: Mapping[str, str],
    tools: Sequence[str],
) -> str:
    """go.mod text of a wrapper module; `replaces` maps a module path to a published version."""
    lines = ["module quantcore.dev/build", "", f"go {go}", "", "require ("]
    lines += [f"\t{path} {version}" for path, version in sorted(requires.items())]
    lines += [")", ""]
    if replaces:
        lines.append("replace (")
        lines += [f"\t{path} => {path} {version}" for path, version in sorted(replaces.items())]
        lines += [")", ""]
    # `tool` keeps the commands' dependencies in go.mod/go.sum through `go mod tidy`.
    lines += [f"tool {package}" for package in tools]
    return "\n".join(lines) + "\n"


def kubernetes_ldflags(kubernetes: str, build_date: str) -> str:
    """Version stamps the upstream build sets; without them the server reports v0.0.0, which
    breaks kubectl's skew checks and helm's kubeVersion constraints."""
    major, minor, _ = kubernetes.removeprefix("v").split(".")
    stamps = {
        "gitVersion": kubernetes,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": build_date,
    }
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.{key}={value}" for key, value in stamps.items()]
    return " ".join(flags)


def ensure_all() -> Binaries:
    """Every binary the control plane and the tests need, building what is missing."""
    kube = ensure_kubernetes()
    return Binaries(
        etcd=ensure_etcd(),
        kube_apiserver=kube["kube-apiserver"],
        kube_controller_manager=kube["kube-controller-manager"],
        helm=ensure_helm(),
        kube_scheduler=kube["kube-scheduler"],
    )


def ensure_node() -> NodeBinaries:
    """Every binary a node needs, building what is missing; Debian's runc, CNI plugins and
    ipset must be installed (`.ci/run` and `make cluster-deps` install them)."""
    for path, package in (
        (RUNC, "runc"),
        (CNI_PLUGINS / "bridge", "containernetworking-plugins"),
        (IPSET, "ipset"),
    ):
        if not path.exists():
            raise BuildError(f"{path} is missing: apt-get install {package}")
    kube = ensure_kubernetes()
    containerd = ensure_containerd()
    return NodeBinaries(
        kubelet=kube["kubelet"],
        kube_proxy=kube["kube-proxy"],
        containerd=containerd["containerd"],
        containerd_shim=containerd["containerd-shim-runc-v2"],
        ctr=containerd["ctr"],
        coredns=ensure_coredns(),
        kube_router=ensure_kube_router(),
        runc=RUNC,
        cni_plugins=CNI_PLUGINS,
    )


def missing() -> list[Path]:
    """Binaries not yet in the cache (what `ensure_all` and `ensure_node` would build)."""
    wanted = [
        *(versions.kubernetes_dir() / "bin" / name for name in KUBE_COMMANDS),
        versions.etcd_dir() / "bin" / "etcd",
        versions.helm_dir() / "helm",
        *(versions.containerd_dir() / "bin" / name for name in CONTAINERD_COMMANDS),
        versions.coredns_dir() / "coredns",
        versions.kube_router_dir() / "kube-router",
    ]
    return [path for path in wanted if not path.exists()]


def ensure_kubernetes() -> dict[str, Path]:
    """The Kubernetes commands by name."""
    root = versions.kubernetes_dir()
    bin_dir = root / "bin"
    wanted = {name: bin_dir / name for name in KUBE_COMMANDS}
    with cache_lock(root):
        if all(path.exists() for path in wanted.values()):
            return wanted
        started = time.monotonic()
        kube = versions.KUBERNETES
        info = _go_json(["mod", "download", "-json", f"k8s.io/kubernetes@{kube}"], cwd=root)
        kubernetes_gomod = Path(info["GoMod"]).read_text()
        staging = versions.staging_version(kube)
        build_dir = root / "build"
        build_dir.mkdir(parents=True, exist_ok=True)
        (build_dir / "go.mod").write_text(
            wrapper_gomod(
                go=go_directive(kubernetes_gomod),
                requires={"k8s.io/kubernetes": kube},
                replaces=dict.fromkeys(staging_modules(kubernetes_gomod), staging),
                tools=[f"k8s.io/kubernetes/cmd/{name}" for name in KUBE_COMMANDS],
            )
        )
        _go(["mod", "tidy"], cwd=build_dir)
        build_date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        _build(
            build_dir,
            [f"k8s.io/kubernetes/cmd/{name}" for name in KUBE_COMMANDS],
            bin_dir,
            ldflags=kubernetes_ldflags(kube, build_date),
        )
        _record_build_time(root, "+".join(KUBE_COMMANDS), started)
    return wanted


def ensure_etcd() -> Path:
    root = versions.etcd_dir()
    binary = root / "bin" / "etcd"
    with cache_lock(root):
        if binary.exists():
            return binary
        started = time.monotonic()
        build_dir = root / "build"
        build_dir.mkdir(parents=True, exist_ok=True)
        (build_dir / "go.mod").write_text(
            wrapper_gomod(
                go=_local_go_version(),
                requires={"go.etcd.io/etcd/server/v3": versions.ETCD},
                replaces={},
                tools=["go.etcd.io/etcd/server/v3"],
            )
        )
        _go(["mod", "tidy"], cwd=build_dir)
        staged = root / "bin.tmp"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        # The server module's root package is etcd's main; name the binary as upstream does.
        _go(
            [
                "build",
                "-trimpath",
                "-ldflags=-s -w",
                "-o",
                str(staged / "etcd"),
                "go.etcd.io/etcd/server/v3",
            ],
            cwd=build_dir,
        )
        _promote(staged, root / "bin")
        _record_build_time(root, "etcd", started)
    return binary


def ensure_helm() -> Path:
    return _go_installed(versions.helm_dir(), "helm", f"helm.sh/helm/v3/cmd/helm@{versions.HELM}")


def ensure_kube_router() -> Path:
    return _go_installed(
        versions.kube_router_dir(),
        "kube-router",
        f"github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@{versions.KUBE_ROUTER}",
        "-ldflags=-s -w",
    )


def _go_installed(root: Path, name: str, package: str, *flags: str) -> Path:
    """`root`/`name`, made by `go install package` (at a version) when the cache lacks it."""
    binary = root / name
    with cache_lock(root):
        if binary.exists():
            return binary
        started = time.monotonic()
        _go(["install", *flags, package], cwd=root, extra_env={"GOBIN": str(root)})
        _record_build_time(root, name, started)
    return binary


def ensure_containerd() -> dict[str, Path]:
    """containerd v2, its runc shim and ctr by name. `go install` works at a tag here (no
    replace directives); no_btrfs drops the one snapshotter that needs C headers."""
    root = versions.containerd_dir()
    bin_dir = root / "bin"
    wanted = {name: bin_dir / name for name in CONTAINERD_COMMANDS}
    with cache_lock(root):
        if all(path.exists() for path in wanted.values()):
            return wanted
        started = time.monotonic()
        staged = root / "bin.tmp"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        packages = [
            f"github.com/containerd/containerd/v2/cmd/{name}@{versions.CONTAINERD}"
            for name in CONTAINERD_COMMANDS
        ]
        _go(
            ["install", "-tags", "no_btrfs", "-ldflags=-s -w", *packages],
            cwd=root,
            extra_env={"GOBIN": str(staged)},
        )
        _promote(staged, bin_dir)
        _record_build_time(root, "containerd", started)
    return wanted


def ensure_coredns() -> Path:
    return _go_installed(
        versions.coredns_dir(),
        "coredns",
        f"github.com/coredns/coredns@{versions.COREDNS}",
        "-ldflags=-s -w",
    )


def _build(build_dir: Path, packages: Sequence[str], bin_dir: Path, *, ldflags: str) -> None:
    staged = bin_dir.with_name(bin_dir.name + ".tmp")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    _go(["build", "-trimpath", f"-ldflags={ldflags}", "-o", f"{staged}/", *packages], cwd=build_dir)
    _promote(staged, bin_dir)


def _promote(staged: Path, final: Path) -> None:
    # A rename is atomic: a half-built directory is never mistaken for a finished build.
    shutil.rmtree(final, ignore_errors=True)
    staged.rename(final)


def _go_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CGO_ENABLED", "0")  # static binaries, as the upstream release builds them
    env["GOFLAGS"] = "-mod=mod -buildvcs=false"
    env.update(extra or {})
    return env


def _go(args: Sequence[str], *, cwd: Path, extra_env: Mapping[str, str] | None = None) -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError("`go` is not on PATH; install Go >= 1.26 to build the Kubernetes binaries")
    cwd.mkdir(parents=True, exist_ok=True)
    command = [*NICE, go, *args]
    done = subprocess.run(
        command, cwd=cwd, env=_go_env(extra_env), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BuildError(
            f"`{' '.join(command)}` in {cwd} failed ({done.returncode}):\n"
            f"{done.stderr.strip()[-4000:]}"
        )
    return done.stdout


def _go_json(args: Sequence[str], *, cwd: Path) -> dict[str, str]:
    result: dict[str, str] = json.loads(_go(args, cwd=cwd))
    if result.get("Error"):
        raise BuildError(f"go {' '.join(args)}: {result['Error']}")
    return result


def _local_go_version() -> str:
    out = _go(["env", "GOVERSION"], cwd=versions.cache_root()).strip()  # e.g. go1.26.8
    return out.removeprefix("go")


def _record_build_time(root: Path, what: str, started: float) -> None:
    seconds = round(time.monotonic() - started, 1)
    with (root / "build-times.log").open("a") as log:
        log.write(f"{datetime.now(UTC).isoformat()} {what} {seconds}s\n")
