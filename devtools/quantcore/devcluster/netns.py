"""The node's own network and mount namespaces, held open by one holder process.

Everything of the node (containerd, kubelet, kube-proxy, the control plane that pods talk to)
runs inside them through `nsenter`, so its routes, interfaces and netfilter rules live and die
with the namespace and the host's are never touched. The network namespace has no link to the
host and no default route: a pod's packets reach the node's own addresses and other pods,
nothing else. The mount namespace is private, so what the kubelet and containerd mount (pod
volumes, network-namespace files, tmpfs state) stays invisible to the host and vanishes with it.
`ip netns exec` is not used: it makes a new mount namespace per command and remounts /sys,
which would hide the kubelet's mounts from containerd.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from quantcore.devcluster import nodeconfig
from quantcore.devservices.process import ChildProcess

# Global sysctls the kubelet rewrites at start; the namespace sees copies bind-mounted over
# them, so the host keeps its own values.
GUARDED_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
# Directories given a fresh tmpfs inside the namespace: runtime state (sockets, runc state,
# pod network-namespace files, CNI caches) that must never land in the host's /run or /var/lib.
PRIVATE_TMPFS = ("/run", "/var/lib")
KUBELET_ROOT = "/var/lib/kubelet"


class NamespaceError(RuntimeError):
    """The namespace could not be made or set up; the message carries the failing command."""


@dataclass(frozen=True)
class NodeNamespace:
    holder: int  # pid of the process that keeps the namespaces alive
    net_inode: int  # identifies the network namespace among /proc/*/ns/net

    def alive(self) -> bool:
        """True while the holder lives and still holds this namespace (not a reused pid)."""
        return _net_inode(self.holder) == self.net_inode

    def enter(self, command: Sequence[str]) -> list[str]:
        """`command` run inside the node's network and mount namespaces."""
        return ["nsenter", "-t", str(self.holder), "-m", "-n", "--", *command]

    def run(self, command: Sequence[str], *, check: bool = True) -> str:
        done = subprocess.run(
            self.enter(command), capture_output=True, text=True, check=False, timeout=60
        )
        if check and done.returncode != 0:
            raise NamespaceError(
                f"`{' '.join(command)}` in the node namespace failed ({done.returncode}): "
                f"{done.stderr.strip()}"
            )
        return done.stdout


def create(directory: Path, *, log_dir: Path, kubelet_dir: Path) -> NodeNamespace:
    """Makes the namespaces, gives them the node's network and private mounts.

    `directory` holds the copies of the guarded sysctls; `log_dir` is bind-mounted at
    /var/log inside, so pod logs stay readable from the host after the node is gone;
    `kubelet_dir` at /var/lib/kubelet (KUBELET_ROOT), so pods' volumes are on disk.
    """
    for tool in ("unshare", "nsenter", "ip", "mount"):
        if shutil.which(tool) is None:
            raise NamespaceError(f"`{tool}` is not on PATH (util-linux, iproute2)")
    # unshare(1) without --fork: the holder itself is in the new namespaces.
    process = ChildProcess(
        "namespace-holder",
        ["unshare", "--net", "--mount", "--propagation", "private", "sleep", "infinity"],
        directory / "namespace-holder.log",
    )
    process.start()
    holder = process.pid
    ours = os.stat("/proc/self/ns/net").st_ino
    deadline = time.monotonic() + 10
    while (inode := _net_inode(holder)) in (None, ours):
        if time.monotonic() > deadline:
            _kill([holder])
            raise NamespaceError("the namespace holder did not enter a new network namespace")
        time.sleep(0.01)
    assert inode is not None
    namespace = NodeNamespace(holder, inode)
    try:
        _set_up(namespace, directory, log_dir, kubelet_dir)
    except BaseException:
        _kill([holder])
        raise
    return namespace


def _set_up(namespace: NodeNamespace, directory: Path, log_dir: Path, kubelet_dir: Path) -> None:
    # Mounts are private to this namespace since unshare; sharing them again here makes new
    # peer groups inside it only, which the kubelet wants for its volume mounts.
    namespace.run(["mount", "--make-rshared", "/"])
    for target in PRIVATE_TMPFS:
        namespace.run(["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", target])
    log_dir.mkdir(parents=True, exist_ok=True)
    namespace.run(["mount", "--bind", str(log_dir), "/var/log"])
    # The kubelet's root, where emptyDir volumes live, on disk as on a real node: on the
    # private tmpfs, a pod's emptyDir (a broker's log segments) was memory charged to the pod,
    # and the in-cluster Kafka was OOM-killed at its limit as its topics grew. The short path
    # stays (the kubelet's unix sockets below it must fit in 107 bytes).
    kubelet_dir.mkdir(parents=True, exist_ok=True)
    namespace.run(["mkdir", "-p", KUBELET_ROOT])
    namespace.run(["mount", "--bind", str(kubelet_dir), KUBELET_ROOT])
    sysctls = directory / "sysctl"
    sysctls.mkdir(parents=True, exist_ok=True)
    for name in GUARDED_SYSCTLS:
        copy = sysctls / name.replace("/", ".")
        copy.write_text(Path("/proc/sys", name).read_text())
        namespace.run(["mount", "--bind", str(copy), f"/proc/sys/{name}"])
    for command in nodeconfig.network_commands():
        namespace.run(command)


def members(namespace: NodeNamespace) -> list[int]:
    """Pids of every process in the node's network namespace (daemons, shims, host-network
    pods); a container in a pod network namespace is found by its cgroup instead."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _net_inode(int(entry.name)) == namespace.net_inode:
            found.append(int(entry.name))
    return found


def destroy(namespace: NodeNamespace, *, timeout: float = 20.0) -> None:
    """Kills every process in the namespace, the holder last; the kernel frees the namespaces,
    their interfaces, netfilter rules and mounts when the last one exits."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [pid for pid in members(namespace) if pid != namespace.holder]
        if not pids:
            break
        _kill(pids)
        if time.monotonic() > deadline:
            raise NamespaceError(f"processes still in the node namespace: {pids}")
        time.sleep(0.05)
    _kill([namespace.holder])
    while namespace.alive():
        if time.monotonic() > deadline:
            raise NamespaceError(f"namespace holder {namespace.holder} did not exit")
        time.sleep(0.05)


def _kill(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child


def _net_inode(pid: int) -> int | None:
    try:
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return None
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None
