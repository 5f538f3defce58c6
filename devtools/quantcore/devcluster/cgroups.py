"""The node's cgroup: one directory of ours in every mounted hierarchy, under which the kubelet
(cgroupfs driver, `cgroupRoot`) puts every pod. It is how teardown finds container processes,
which live in pod network namespaces of their own, and what it removes afterwards.

This machine mounts cgroups in hybrid mode (v1 controllers, cgroup2 at /sys/fs/cgroup/unified);
nothing here remounts or changes a cgroup the project did not make.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


class CgroupError(RuntimeError):
    """A cgroup could not be made or emptied."""


def hierarchies() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1 and v2) this machine has."""
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _device, mountpoint, fstype, *_ = line.split()
        if fstype in ("cgroup", "cgroup2"):
            mounts.append(Path(mountpoint))
    return mounts


def create(name: str) -> str:
    """Makes /<name> in every hierarchy and returns the kubelet's cgroupRoot for it."""
    if "/" in name or name in ("", ".", ".."):
        raise CgroupError(f"invalid cgroup name {name!r}")
    for mount in hierarchies():
        directory = mount / name
        directory.mkdir(exist_ok=True)
        # A new cpuset has no cpus or memory nodes until given its parent's: no task may join.
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (directory / knob).exists() and not (directory / knob).read_text().strip():
                (directory / knob).write_text((mount / knob).read_text())
    return f"/{name}"


def members(name: str) -> set[int]:
    """Every pid in the cgroup or below it, in any hierarchy."""
    pids: set[int] = set()
    for mount in hierarchies():
        root = mount / name
        if not root.is_dir():
            continue
        # os.walk skips a directory that vanishes under it (the kubelet removes pod cgroups
        # while we walk); Path.rglob raises.
        for directory, _, files in os.walk(root):
            if "cgroup.procs" not in files:
                continue
            try:
                text = (Path(directory) / "cgroup.procs").read_text()
            except OSError:
                continue  # removed while we walked
            pids.update(int(line) for line in text.split())
    return pids


def destroy(name: str, *, timeout: float = 20.0) -> None:
    """Kills every process in the cgroup, then removes its directories, deepest first."""
    deadline = time.monotonic() + timeout
    while pids := members(name):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise CgroupError(f"processes still in cgroup {name}: {sorted(pids)}")
        time.sleep(0.05)
    for mount in hierarchies():
        root = mount / name
        if not root.is_dir():
            continue
        # Bottom-up; os.walk skips what vanishes while it walks (the kubelet may still be
        # removing pod cgroups of its own), where Path.rglob would raise.
        for directory, _, _ in os.walk(root, topdown=False):
            _rmdir(Path(directory), deadline)


def exists(name: str) -> bool:
    return any((mount / name).exists() for mount in hierarchies())


def _rmdir(directory: Path, deadline: float) -> None:
    # A cgroup whose last task has just exited can stay busy for a moment.
    while True:
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if time.monotonic() > deadline:
                raise CgroupError(f"cannot remove cgroup {directory}: {error}") from error
            time.sleep(0.05)
