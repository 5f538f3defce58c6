"""Base images made from Debian packages: debootstrap (minbase) into a directory, imported with
`buildah from scratch`, committed under a name that carries the recipe's hash.

The package mirror is this machine's own apt configuration, read at run time, so no mirror is
named in the repository. A base is rebuilt only when its recipe (suite, packages, mirror)
changes.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from quantcore.devcluster.binaries import NICE
from quantcore.devcluster.buildah import Buildah

SUITE = "bookworm"
VARIANT = "minbase"
# Bump when the way a base is made changes (what is pruned, how it is imported).
RECIPE = 1
APT_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))
# What a container never needs: package caches, apt lists, documentation, translations.
PRUNED = (
    "var/cache/apt/archives",
    "var/cache/apt/pkgcache.bin",
    "var/cache/apt/srcpkgcache.bin",
    "var/cache/debconf/templates.dat-old",
    "var/lib/apt/lists",
    "var/log",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/doc",
)


class RootfsError(RuntimeError):
    """A base could not be made; the message says which step and why."""


@dataclass(frozen=True)
class Base:
    """A base image: a name and the Debian packages installed on top of minbase."""

    name: str
    packages: tuple[str, ...]


# Python at /usr/bin/python3.11 in all three, so a virtualenv made on BUILD runs on the others.
PYTHON = Base("python", ("python3", "ca-certificates"))
BUILD = Base("build", ("python3", "python3-venv", "python3-dev", "gcc", "libc6-dev"))
SPARK = Base("spark", ("python3", "openjdk-17-jre-headless", "tini"))
# Debian's Redis server (and redis-cli) alone: images/Dockerfile.redis.
REDIS = Base("redis", ("redis-server",))


def mirror_from_sources(text: str, suite: str = SUITE) -> str | None:
    """The first Debian mirror serving `suite` in an apt sources file (deb822 or one-line)."""
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(
            (key.strip().lower(), value.strip())
            for key, _, value in (
                line.partition(":") for line in stanza.splitlines() if not line.startswith("#")
            )
            if value
        )
        if "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split():
            return fields["uris"].split()[0]
    for line in text.splitlines():
        words = [w for w in re.sub(r"\[[^]]*\]", "", line).split()]
        if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
            return words[1]
    return None


def host_mirror() -> str:
    """The mirror this machine's apt uses for the suite the bases are made from."""
    files: list[Path] = []
    for source in APT_SOURCES:
        if source.is_dir():
            files += sorted(source.glob("*.sources")) + sorted(source.glob("*.list"))
        elif source.is_file():
            files.append(source)
    for path in files:
        mirror = mirror_from_sources(path.read_text(), SUITE)
        if mirror:
            return mirror
    raise RootfsError(f"no apt source for Debian {SUITE} in {', '.join(map(str, APT_SOURCES))}")


def base_key(base: Base, mirror: str) -> str:
    recipe = f"{RECIPE}\n{SUITE}\n{VARIANT}\n{mirror}\n{' '.join(sorted(base.packages))}\n"
    return hashlib.sha256(recipe.encode()).hexdigest()


def base_ref(base: Base, mirror: str) -> str:
    return f"localhost/quantcore/base-{base.name}:{base_key(base, mirror)[:16]}"


def ensure_base(buildah: Buildah, base: Base, work: Path, mirror: str) -> str:
    """The base's image reference, made with debootstrap if the store lacks it."""
    ref = base_ref(base, mirror)
    if buildah.has_image(ref):
        return ref
    if shutil.which("debootstrap") is None:
        raise RootfsError("debootstrap is not installed (apt-get install debootstrap)")
    target = work / f"rootfs-{base.name}"
    _remove_tree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        command = [
            *NICE,
            "debootstrap",
            f"--variant={VARIANT}",
            f"--include={','.join(base.packages)}",
            SUITE,
            str(target),
            mirror,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = target / "debootstrap" / "debootstrap.log"
            detail = log.read_text()[-3000:] if log.exists() else done.stderr[-3000:]
            raise RootfsError(f"debootstrap of base {base.name} failed:\n{detail}")
        for relative in PRUNED:
            _empty(target / relative)
        _import(buildah, target, ref)
    finally:
        _remove_tree(target)
    return ref


def _import(buildah: Buildah, rootfs: Path, ref: str) -> None:
    with buildah.container("scratch") as container:
        mountpoint = buildah.run(["mount", container], check_output=True).strip()
        # tar keeps owners, modes and special files as debootstrap made them.
        pack = subprocess.Popen(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", "-", "."], stdout=subprocess.PIPE
        )
        unpack = subprocess.run(
            ["tar", "-C", mountpoint, "--numeric-owner", "-xpf", "-"],
            stdin=pack.stdout,
            capture_output=True,
            check=False,
        )
        if pack.stdout is not None:
            pack.stdout.close()
        buildah.run(["umount", container])
        if pack.wait() != 0 or unpack.returncode != 0:
            raise RootfsError(f"copying {rootfs} into the image failed: {unpack.stderr!r}")
        env = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        buildah.run(["config", "--env", env, "--cmd", "/bin/bash", container])
        buildah.commit(container, ref)


def _empty(path: Path) -> None:
    """Remove what is inside `path` (or the file itself), keeping directories packages own."""
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    elif path.exists() or path.is_symlink():
        path.unlink()


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def _remove_tree(directory: Path) -> None:
    """Delete a debootstrap target, first unmounting what a failed run may have left mounted
    in it (/proc, /sys, a bind of /dev): deleting through those would reach the host's."""
    if not directory.exists():
        return
    for point in sorted(_mounts_under(directory), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False)
    left = _mounts_under(directory)
    if left:
        raise RootfsError(f"{directory} still has mounts ({', '.join(left)}); not deleting it")
    shutil.rmtree(directory)
