"""Starts and stops etcd, kube-apiserver and kube-controller-manager on loopback, envtest-style.

Everything a run needs (certs, etcd data, logs, kubeconfigs, pids) lives in one directory,
so `stop` needs only that directory and several control planes can run side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from quantcore.devcluster import certs, kubeconfig
from quantcore.devcluster.binaries import Binaries
from quantcore.devservices.ports import free_ports
from quantcore.devservices.process import ChildProcess, alive

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # the first address: the `kubernetes` service
# The controllers a pod-less cluster can run: owner-driven garbage collection, namespace
# cleanup, workload controllers (they create ReplicaSets/Pods that stay Pending) and the
# service-account machinery that makes `default` service accounts and their tokens.
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "job-controller",
    "cronjob-controller",
    "disruption-controller",
    "resourcequota-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "endpointslice-controller",
    "clusterrole-aggregation-controller",
    "ttl-after-finished-controller",
)
STATE_FILE = "state.json"


class ControlPlaneError(RuntimeError):
    """A component failed to start or become ready; the message carries its log's tail."""


@dataclass(frozen=True)
class ControlPlane:
    directory: Path
    kubeconfig: Path  # admin (system:masters) kubeconfig for kubectl, helm and tests
    server: str
    pids: dict[str, int]


def start(
    directory: Path,
    binaries: Binaries,
    *,
    kubeconfig_path: Path | None = None,
    die_with_parent: bool = False,
    timeout: float = 120.0,
) -> ControlPlane:
    """Starts a fresh control plane in `directory` (wiped first) and waits until it serves.

    `die_with_parent` ties the processes to the calling process (a pytest session), so a
    killed test run leaves nothing behind; `make cluster-up` leaves them running instead.
    """
    if directory.exists():
        stop(directory)
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    pki = certs.create(directory / "pki", service_ip=SERVICE_IP)
    etcd_port, etcd_peer_port, api_port, kcm_port = free_ports(4)
    server = f"https://127.0.0.1:{api_port}"
    admin_kubeconfig = kubeconfig.write(
        kubeconfig_path or directory / "kubeconfig",
        kubeconfig.render(
            server=server, ca_cert=pki.ca.cert, user="quantcore-admin", client=pki.admin
        ),
    )
    kcm_kubeconfig = kubeconfig.write(
        directory / "controller-manager.kubeconfig",
        kubeconfig.render(
            server=server,
            ca_cert=pki.ca.cert,
            user="system:kube-controller-manager",
            client=pki.controller_manager,
        ),
    )
    pids: dict[str, int] = {}
    plane = ControlPlane(directory, admin_kubeconfig, server, pids)
    try:
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{etcd_peer_port}"
        pids["etcd"] = _spawn(
            directory,
            "etcd",
            [
                str(binaries.etcd),
                "--name=default",
                f"--data-dir={directory / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",  # throwaway data: durability buys nothing here
                "--log-level=warn",
            ],
            die_with_parent,
        )
        _wait(directory, "etcd", lambda: _http_ok(f"{etcd_url}/health"), timeout)
        pids["kube-apiserver"] = _spawn(
            directory,
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={directory / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving.cert}",
                f"--tls-private-key-file={pki.serving.key}",
                f"--client-ca-file={pki.ca.cert}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.service_account_pub}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",  # so charts' and operators' RBAC is really checked
                # Loopback addresses are invalid Endpoints; nothing in-cluster dials the
                # `kubernetes` service here, so skip reconciling its endpoints.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ],
            die_with_parent,
        )
        ca_context = _client_context(pki)
        _wait(
            directory,
            "kube-apiserver",
            lambda: _http_ok(f"{server}/readyz", ca_context),
            timeout,
        )
        pids["kube-controller-manager"] = _spawn(
            directory,
            "kube-controller-manager",
            [
                str(binaries.kube_controller_manager),
                f"--kubeconfig={kcm_kubeconfig}",
                f"--authentication-kubeconfig={kcm_kubeconfig}",
                f"--authorization-kubeconfig={kcm_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={directory / 'controller-manager-certs'}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--use-service-account-credentials",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca.cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                "--profiling=false",
            ],
            die_with_parent,
        )
        # Its serving cert is self-signed; /healthz is open to anyone by default.
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        _wait(
            directory,
            "kube-controller-manager",
            lambda: _http_ok(f"https://127.0.0.1:{kcm_port}/healthz", insecure),
            timeout,
        )
        # Readiness that matters to tests: the service-account controller made the
        # `default` account, so pods (and Deployments' pods) can be admitted.
        _wait(
            directory,
            "kube-controller-manager",
            lambda: _http_ok(
                f"{server}/api/v1/namespaces/default/serviceaccounts/default", ca_context
            ),
            timeout,
        )
    except BaseException:
        _terminate(pids)
        raise
    (directory / STATE_FILE).write_text(
        json.dumps({"server": server, "kubeconfig": str(admin_kubeconfig), "pids": pids}, indent=2)
    )
    return plane


def stop(directory: Path) -> bool:
    """Stops the control plane recorded in `directory`; False when none was recorded."""
    state_file = directory / STATE_FILE
    if not state_file.exists():
        return False
    state = json.loads(state_file.read_text())
    _terminate(state["pids"])
    state_file.unlink()
    return True


def running(directory: Path) -> ControlPlane | None:
    """The control plane recorded in `directory` if all its processes are still alive."""
    state_file = directory / STATE_FILE
    if not state_file.exists():
        return None
    state = json.loads(state_file.read_text())
    pids = {name: int(pid) for name, pid in state["pids"].items()}
    if not all(_is_ours(pid, name) for name, pid in pids.items()):
        return None
    return ControlPlane(directory, Path(state["kubeconfig"]), state["server"], pids)


def _terminate(pids: dict[str, int]) -> None:
    # Reverse start order: the controller-manager first, etcd last.
    for name, pid in reversed(list(pids.items())):
        if not _is_ours(pid, name):
            continue  # exited already, or the pid was reused by something else
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def _spawn(directory: Path, name: str, command: Sequence[str], die_with_parent: bool) -> int:
    # Its own session: Ctrl-C in a terminal must not reach the servers directly. The pid is
    # all `stop` needs later, possibly from another process (`make cluster-down`).
    process = ChildProcess(
        name, command, directory / f"{name}.log", die_with_parent=die_with_parent
    )
    process.start()
    return process.pid


def _wait(directory: Path, name: str, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    log = directory / f"{name}.log"
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    raise ControlPlaneError(f"{name} not ready after {timeout:.0f}s; log {log}:\n{tail}")


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _client_context(pki: certs.Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    context.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
    return context


def _is_ours(pid: int, name: str) -> bool:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    return Path(argv0).name == name and alive(pid)
