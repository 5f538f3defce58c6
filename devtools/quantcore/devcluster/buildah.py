"""buildah with its own storage under the cache, set up for this kind of machine.

Every call passes --root/--runroot, so images never land in the system's default store.
RUN steps use chroot isolation (runc and crun stumble over hybrid cgroup mounts) and the
host's network; nothing here talks to a registry (`--pull=never`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from quantcore.devcluster.binaries import NICE


class BuildahError(RuntimeError):
    """A buildah command failed; the message carries the command and the end of its output."""


@dataclass(frozen=True)
class Buildah:
    root: Path
    runroot: Path

    @classmethod
    def under(cls, directory: Path) -> Buildah:
        if shutil.which("buildah") is None:
            raise BuildahError("buildah is not installed (apt-get install buildah)")
        return cls(root=directory / "storage", runroot=directory / "run")

    def run(self, args: Sequence[str], *, check_output: bool = False) -> str:
        command = [
            *NICE,
            "buildah",
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "overlay",
            *args,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip()
            raise BuildahError(
                f"`{' '.join(command)}` failed ({done.returncode}):\n{output[-6000:]}"
            )
        return done.stdout if check_output else ""

    def has_image(self, ref: str) -> bool:
        command = ["buildah", "--root", str(self.root), "--runroot", str(self.runroot)]
        command += ["--storage-driver", "overlay", "inspect", "--type", "image", ref]
        done = subprocess.run(command, capture_output=True, check=False)
        return done.returncode == 0

    def image_config(self, ref: str) -> dict[str, object]:
        """The image's OCI configuration (Entrypoint, Cmd, User, Env, WorkingDir)."""
        info = json.loads(self.run(["inspect", "--type", "image", ref], check_output=True))
        config: dict[str, object] = info["OCIv1"]["config"]
        return config

    def bud(
        self,
        *,
        dockerfile: Path,
        context: Path,
        ref: str,
        build_args: Mapping[str, str],
        build_contexts: Mapping[str, Path],
        volumes: Sequence[str],
    ) -> None:
        args = ["bud", "--isolation", "chroot", "--network", "host", "--pull=never"]
        args += ["--format", "docker", "--layers=false", "--force-rm", "-q"]
        args += ["-f", str(dockerfile), "-t", ref]
        for name, value in sorted(build_args.items()):
            args += ["--build-arg", f"{name}={value}"]
        for name, path in sorted(build_contexts.items()):
            args += ["--build-context", f"{name}={path}"]
        for volume in volumes:
            args += ["--volume", volume]
        self.run([*args, str(context)])

    @contextmanager
    def container(self, image: str) -> Iterator[str]:
        """A working container of `image`, removed afterwards."""
        name = self.run(["from", "--pull=never", "--quiet", image], check_output=True).strip()
        try:
            yield name
        finally:
            self.run(["rm", name])

    def run_in(
        self, container: str, command: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> str:
        """Run `command` in `container` as the image's user; its stdout."""
        args = ["run", "--isolation", "chroot", "--network", "host"]
        for name, value in (env or {}).items():
            args += ["--env", f"{name}={value}"]
        return self.run([*args, container, "--", *command], check_output=True)

    def commit(self, container: str, ref: str) -> None:
        self.run(["commit", "--format", "docker", "-q", container, ref])

    def push_archive(self, ref: str, archive: Path) -> None:
        """`ref` as a docker-archive tar at `archive` (written beside, then renamed)."""
        staged = archive.with_name(archive.name + ".tmp")
        staged.unlink(missing_ok=True)
        self.run(["push", "-q", ref, f"docker-archive:{staged}:{ref}"])
        staged.rename(archive)

    def pull_archive(self, archive: Path) -> None:
        self.run(["pull", "-q", f"docker-archive:{archive}"])

    def image_size(self, ref: str) -> int:
        """Bytes of the image's layers, uncompressed."""
        out = self.run(["images", "--json", ref], check_output=True)
        return int(json.loads(out)[0]["size"])

    def prune_dangling(self) -> None:
        """Drop untagged images (earlier builds of a tag this store still holds)."""
        self.run(["rmi", "--prune"])
