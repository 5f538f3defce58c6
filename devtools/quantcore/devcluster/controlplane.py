"""Starts and stops etcd, kube-apiserver and kube-controller-manager, envtest-style.

Two placements: on the host's loopback (no node: pods stay Pending; fast, for the tests that
need only the API), or inside a node's network namespace (netns.py) with kube-scheduler too,
where pods reach the API server through the `kubernetes` Service and the host through a relay.
Everything a run needs (certs, etcd data, logs, kubeconfigs, pids) lives in one directory,
so `stop` needs only that directory and several control planes can run side by side.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from quantcore import ownership
from quantcore.devcluster import certs, kubeconfig, nodeconfig
from quantcore.devcluster.binaries import Binaries
from quantcore.devcluster.netns import NodeNamespace
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
# Inside the node namespace every port is ours: the well-known ones.
NODE_ETCD_PORTS = (2379, 2380)
NODE_CONTROLLER_MANAGER_PORT = 10257
NODE_SCHEDULER_PORT = 10259


class ControlPlaneError(RuntimeError):
    """A component failed to start or become ready; the message carries its log's tail."""


@dataclass(frozen=True)
class ControlPlane:
    directory: Path
    kubeconfig: Path  # admin (system:masters) kubeconfig for kubectl, helm and tests
    server: str
    pids: dict[str, int]
    pki: certs.Pki | None = None  # known to the process that started it


@dataclass(frozen=True)
class InNode:
    """Placement inside a node's namespace: `server` is the host's way in (a relay)."""

    namespace: NodeNamespace
    server: str


def start(
    directory: Path,
    binaries: Binaries,
    *,
    kubeconfig_path: Path | None = None,
    die_with_parent: bool = False,
    timeout: float = 120.0,
    node: InNode | None = None,
) -> ControlPlane:
    """Starts a fresh control plane in `directory` and waits until it serves.

    `die_with_parent` ties the processes to the calling process (a pytest session), so a
    killed test run leaves nothing behind; `make cluster-up` leaves them running instead.
    `node` places it in a node's namespace, with a scheduler and the Node authorizer.
    """
    if node is None:  # in a node, cluster.start has claimed and cleared the directory
        ownership.claim(directory, "--dir (make: CLUSTER_DIR=)")  # refuses what is not ours
        stop(directory)
        ownership.clear(directory)
    pki = certs.create(
        directory / "pki",
        service_ip=SERVICE_IP,
        node=(nodeconfig.NODE_NAME, nodeconfig.NODE_IP) if node else None,
    )
    if node is None:
        etcd_port, etcd_peer_port, api_port, kcm_port = free_ports(4)
        server = f"https://127.0.0.1:{api_port}"
        internal_server = server
    else:
        (etcd_port, etcd_peer_port), api_port = NODE_ETCD_PORTS, nodeconfig.API_PORT
        kcm_port = NODE_CONTROLLER_MANAGER_PORT
        server = node.server
        internal_server = f"https://127.0.0.1:{api_port}"

    def launch(name: str, command: Sequence[str]) -> int:
        wrapped = node.namespace.enter(command) if node else command
        return spawn(directory, name, wrapped, die_with_parent)

    admin_kubeconfig = kubeconfig.write(
        kubeconfig_path or directory / "kubeconfig",
        kubeconfig.render(
            server=server, ca_cert=pki.ca.cert, user="quantcore-admin", client=pki.admin
        ),
    )
    kcm_kubeconfig = kubeconfig.write(
        directory / "controller-manager.kubeconfig",
        kubeconfig.render(
            server=internal_server,
            ca_cert=pki.ca.cert,
            user="system:kube-controller-manager",
            client=pki.controller_manager,
        ),
    )
    pids: dict[str, int] = {}
    plane = ControlPlane(directory, admin_kubeconfig, server, pids, pki)
    try:
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{etcd_peer_port}"
        pids["etcd"] = launch(
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
        )
        if node is None:  # in a node, the API server's readiness covers etcd's
            wait_ready(directory, "etcd", lambda: _http_ok(f"{etcd_url}/health"), timeout)
        pids["kube-apiserver"] = launch(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                *_apiserver_placement(node, pki),
                f"--secure-port={api_port}",
                f"--cert-dir={directory / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving.cert}",
                f"--tls-private-key-file={pki.serving.key}",
                f"--client-ca-file={pki.ca.cert}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.service_account_pub}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--profiling=false",
            ],
        )
        ca_context = _client_context(pki)
        wait_ready(
            directory,
            "kube-apiserver",
            lambda: _http_ok(f"{server}/readyz", ca_context),
            timeout,
        )
        pids["kube-controller-manager"] = launch(
            "kube-controller-manager",
            [
                str(binaries.kube_controller_manager),
                f"--kubeconfig={kcm_kubeconfig}",
                f"--authentication-kubeconfig={kcm_kubeconfig}",
                f"--authorization-kubeconfig={kcm_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={directory / 'controller-manager-certs'}",
                # With a node, every default controller (node lifecycle, endpoints, ...).
                f"--controllers={'*' if node else ','.join(CONTROLLERS)}",
                "--use-service-account-credentials",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca.cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                "--profiling=false",
            ],
        )
        if node is None:
            # Its serving cert is self-signed; /healthz is open to anyone by default.
            insecure = ssl.create_default_context()
            insecure.check_hostname = False
            insecure.verify_mode = ssl.CERT_NONE
            wait_ready(
                directory,
                "kube-controller-manager",
                lambda: _http_ok(f"https://127.0.0.1:{kcm_port}/healthz", insecure),
                timeout,
            )
        else:
            pids["kube-scheduler"] = launch(
                "kube-scheduler",
                _scheduler_command(directory, binaries, pki, internal_server),
            )
        # Readiness that matters to tests: the service-account controller made the
        # `default` account, so pods (and Deployments' pods) can be admitted.
        wait_ready(
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


def _apiserver_placement(node: InNode | None, pki: certs.Pki) -> list[str]:
    if node is None:
        return [
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--authorization-mode=RBAC",  # so charts' and operators' RBAC is really checked
            # Loopback addresses are invalid Endpoints; nothing in-cluster dials the
            # `kubernetes` service here, so skip reconciling its endpoints.
            "--endpoint-reconciler-type=none",
        ]
    assert pki.node is not None, "a control plane in a node has the node's PKI"
    node_pki = pki.node
    return [
        "--bind-address=0.0.0.0",  # the namespace's loopback and the node address
        f"--advertise-address={nodeconfig.NODE_IP}",  # the `kubernetes` Service's endpoint
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        f"--kubelet-client-certificate={node_pki.kubelet_client.cert}",
        f"--kubelet-client-key={node_pki.kubelet_client.key}",
        f"--kubelet-certificate-authority={pki.ca.cert}",
        # The node's hostname resolves nowhere; its InternalIP is what logs/exec dial.
        "--kubelet-preferred-address-types=InternalIP",
    ]


def _scheduler_command(
    directory: Path, binaries: Binaries, pki: certs.Pki, server: str
) -> list[str]:
    assert pki.node is not None, "a control plane in a node has the node's PKI"
    identity = pki.node.scheduler
    config = kubeconfig.write(
        directory / "scheduler.kubeconfig",
        kubeconfig.render(
            server=server, ca_cert=pki.ca.cert, user="system:kube-scheduler", client=identity
        ),
    )
    return [
        str(binaries.kube_scheduler),
        f"--kubeconfig={config}",
        f"--authentication-kubeconfig={config}",
        f"--authorization-kubeconfig={config}",
        "--bind-address=127.0.0.1",
        f"--secure-port={NODE_SCHEDULER_PORT}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def stop(directory: Path) -> bool:
    """Stops the control plane recorded in `directory`; False when none was recorded."""
    state_file = directory / STATE_FILE
    if not ownership.is_ours(directory) or not state_file.exists():
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


def spawn(
    directory: Path,
    name: str,
    command: Sequence[str],
    die_with_parent: bool,
    env: dict[str, str] | None = None,
) -> int:
    """Starts `command` with its output in `directory`/`name`.log; returns its pid.

    Its own session: Ctrl-C in a terminal must not reach the servers directly. The pid is
    all `stop` needs later, possibly from another process (`make cluster-down`)."""
    process = ChildProcess(
        name, command, directory / f"{name}.log", die_with_parent=die_with_parent, env=env
    )
    process.start()
    return process.pid


def wait_ready(directory: Path, name: str, ready: Callable[[], bool], timeout: float) -> None:
    """Waits for `ready()`; on timeout, fails with the tail of `name`'s log."""
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
