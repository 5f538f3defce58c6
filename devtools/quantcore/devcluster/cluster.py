"""A whole test-ground cluster: the control plane alone (fast; pods stay Pending), or with a node
that really runs pods. `start`, `stop` and `forward` are what `make cluster-up/down`, the test
fixtures and the benchmarks use.

With a node, everything runs inside the node's namespace (netns.py) and the host reaches the
API server, and any Service a test asks for, through loopback relays (relay.py). `stop` finds
every process by namespace and cgroup membership, so nothing survives it: not a container
whose shim outlived containerd, not a mount, an interface or a netfilter rule.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.config import new_client_from_config

from quantcore import ownership
from quantcore.devcluster import (
    binaries,
    cgroups,
    controlplane,
    netns,
    node,
    nodeconfig,
    relay,
)
from quantcore.devcluster.images import BuiltImage, load_into_containerd

NODE_STATE = "node.json"
# The loaded images: reference -> the same image by digest, for deploying exactly them.
IMAGES_STATE = "images.json"
PAUSE_IMAGE = "pause"
COREDNS_RBAC_NAME = "quantcore:coredns"
KUBE_ROUTER_RBAC_NAME = "quantcore:kube-router"


class ClusterError(RuntimeError):
    """The cluster did not come up; the message says which part and carries its log."""


@dataclass(frozen=True)
class Cluster:
    directory: Path
    kubeconfig: Path
    server: str
    node: bool

    def pinned_images(self) -> dict[str, str]:
        """Each image loaded into the node, reference -> `repo@sha256:...` (empty without a
        node). Helm values and MarketFeeds name these to run exactly what was built."""
        state = self.directory / IMAGES_STATE
        return json.loads(state.read_text()) if state.exists() else {}


def start(
    directory: Path,
    *,
    with_node: bool,
    kubeconfig_path: Path | None = None,
    die_with_parent: bool = False,
    images: Sequence[BuiltImage] = (),
    timeout: float = 120.0,
) -> Cluster:
    """Starts a cluster in `directory`. With a node, `images` are loaded into its runtime
    before this returns; they must include the pause image, every pod's sandbox."""
    built = binaries.ensure_all()
    if not with_node:
        plane = controlplane.start(
            directory, built, kubeconfig_path=kubeconfig_path, die_with_parent=die_with_parent
        )
        return Cluster(directory, plane.kubeconfig, plane.server, node=False)
    sandbox = [image for image in images if image.name == PAUSE_IMAGE]
    if not sandbox:
        raise ClusterError(f"a node needs the {PAUSE_IMAGE!r} image among its images")
    node_binaries = binaries.ensure_node()
    ownership.claim(directory, "--dir (make: CLUSTER_DIR=)")  # refuses what is not ours
    stop(directory)
    # A fresh cluster: the previous run's etcd data, certificates and node state go.
    ownership.clear(directory)
    paths = node.NodePaths(directory / "node")
    namespace = netns.create(paths.root, log_dir=paths.logs, kubelet_dir=paths.kubelet_disk)
    cgroup_name = f"quantcore-{namespace.net_inode}"
    # Recorded before anything else starts, so `stop` can clean up a half-started node.
    # Relays need no record: they join the node's namespace and die with it.
    state = {"holder": namespace.holder, "net_inode": namespace.net_inode, "cgroup": cgroup_name}
    (directory / NODE_STATE).write_text(json.dumps(state, indent=2))
    try:
        cgroup_root = cgroups.create(cgroup_name)
        _, api_port = relay.start(
            holder=namespace.holder,
            target=f"{nodeconfig.NODE_IP}:{nodeconfig.API_PORT}",
            log=directory / "relay-apiserver.log",
        )
        plane = controlplane.start(
            directory,
            built,
            kubeconfig_path=kubeconfig_path,
            die_with_parent=die_with_parent,
            timeout=timeout,
            node=controlplane.InNode(namespace, f"https://127.0.0.1:{api_port}"),
        )
        assert plane.pki is not None
        with new_client_from_config(config_file=str(plane.kubeconfig)) as api:
            _install_dns_objects(api)
            _install_policy_engine_rbac(api)
            node.start(
                directory,
                paths,
                node_binaries,
                plane.pki,
                namespace,
                cgroup_root=cgroup_root,
                sandbox_image=sandbox[0].ref,
                die_with_parent=die_with_parent,
            )
            load_images(directory, images)
            _wait_node_ready(api, directory, timeout)
            node.start_firewall(
                directory,
                paths,
                node_binaries,
                plane.pki,
                namespace,
                die_with_parent=die_with_parent,
            )
    except BaseException:
        stop(directory)
        raise
    return Cluster(directory, plane.kubeconfig, plane.server, node=True)


def load_images(directory: Path, images: Sequence[BuiltImage]) -> dict[str, str]:
    """Imports `images` into the running node's containerd (again, when rebuilt) and records
    their digests beside the others; returns every loaded reference -> its digest name."""
    holder = node_namespace(directory).holder
    # The socket lives on the namespace's private /run; /proc/<pid>/root reaches it.
    socket = f"/proc/{holder}/root{nodeconfig.CONTAINERD_SOCKET}"
    pinned = load_into_containerd(binaries.ensure_node().ctr, socket, images)
    state = directory / IMAGES_STATE
    recorded = json.loads(state.read_text()) if state.exists() else {}
    recorded.update(pinned)
    state.write_text(json.dumps(recorded, indent=2))
    return recorded


def stop(directory: Path) -> bool:
    """Stops whatever cluster `directory` records; False when it records none, or when the
    directory is not the project's (ownership.py)."""
    state_file = directory / NODE_STATE
    if not state_file.exists() or not ownership.is_ours(directory):
        return controlplane.stop(directory)
    state = json.loads(state_file.read_text())
    namespace = netns.NodeNamespace(state["holder"], state["net_inode"])
    if namespace.alive():
        # Containers first (pod network namespaces: found by cgroup), then every process in
        # the node's namespace: daemons, shims, the control plane, the relays.
        cgroups.destroy(state["cgroup"])
        netns.destroy(namespace)
    elif cgroups.exists(state["cgroup"]):
        cgroups.destroy(state["cgroup"])
    (directory / controlplane.STATE_FILE).unlink(missing_ok=True)
    # containerd's images and snapshots, the kubelet's pod directories: state of ours, gone
    # with the node. Logs stay for reading.
    for owned in ("containerd", "kubelet"):
        shutil.rmtree(directory / "node" / owned, ignore_errors=True)
    (directory / IMAGES_STATE).unlink(missing_ok=True)
    state_file.unlink()
    return True


def running(directory: Path) -> Cluster | None:
    """The cluster `directory` records, if its API server's process is still there."""
    plane = controlplane.running(directory)
    if plane is None:
        return None
    return Cluster(
        directory, plane.kubeconfig, plane.server, node=(directory / NODE_STATE).exists()
    )


def node_namespace(directory: Path) -> netns.NodeNamespace:
    """The namespace of the node `directory` records."""
    state = json.loads((directory / NODE_STATE).read_text())
    return netns.NodeNamespace(state["holder"], state["net_inode"])


def forward(directory: Path, target: str, name: str) -> int:
    """A loopback port on the host relayed to `target` (address:port inside the node); the
    relay stops with the node."""
    holder = node_namespace(directory).holder
    _, port = relay.start(holder=holder, target=target, log=directory / f"relay-{name}.log")
    return port


def _install_dns_objects(api: client.ApiClient) -> None:
    _grant_reading(
        api,
        COREDNS_RBAC_NAME,
        [
            client.V1PolicyRule(
                api_groups=[""],
                resources=["services", "endpoints", "pods", "namespaces"],
                verbs=["get", "list", "watch"],
            ),
            client.V1PolicyRule(
                api_groups=["discovery.k8s.io"],
                resources=["endpointslices"],
                verbs=["get", "list", "watch"],
            ),
        ],
    )
    core = client.CoreV1Api(api)
    discovery = client.DiscoveryV1Api(api)
    service, endpoint_slice = nodeconfig.dns_objects()
    # The client takes plain manifests as bodies; its stubs name only the model classes.
    core.create_namespaced_service("kube-system", cast(Any, service))
    discovery.create_namespaced_endpoint_slice("kube-system", cast(Any, endpoint_slice))


def _install_policy_engine_rbac(api: client.ApiClient) -> None:
    """kube-router's firewall reads what policies select, and the node it runs on."""
    _grant_reading(
        api,
        KUBE_ROUTER_RBAC_NAME,
        [
            client.V1PolicyRule(
                api_groups=[""],
                resources=["pods", "namespaces", "nodes", "services", "endpoints"],
                verbs=["get", "list", "watch"],
            ),
            client.V1PolicyRule(
                api_groups=["networking.k8s.io"],
                resources=["networkpolicies"],
                verbs=["get", "list", "watch"],
            ),
            client.V1PolicyRule(
                api_groups=["discovery.k8s.io"],
                resources=["endpointslices"],
                verbs=["get", "list", "watch"],
            ),
        ],
    )


def _grant_reading(api: client.ApiClient, user: str, rules: list[client.V1PolicyRule]) -> None:
    """A ClusterRole named `user` with `rules`, bound to the certificate user of that name."""
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_cluster_role(
        client.V1ClusterRole(metadata=client.V1ObjectMeta(name=user), rules=rules)
    )
    rbac.create_cluster_role_binding(
        client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name=user),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=user
            ),
            subjects=[
                client.RbacV1Subject(kind="User", name=user, api_group="rbac.authorization.k8s.io")
            ],
        )
    )


def _wait_node_ready(api: client.ApiClient, directory: Path, timeout: float) -> None:
    core = client.CoreV1Api(api)

    def ready() -> bool:
        try:
            found: Any = core.read_node(nodeconfig.NODE_NAME)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        conditions = {c.type: c.status for c in (found.status.conditions or [])}
        return conditions.get("Ready") == "True"

    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {name}:\n{(directory / f'{name}.log').read_text(errors='replace')[-2500:]}"
                for name in ("kubelet", "containerd")
                if (directory / f"{name}.log").exists()
            )
            raise ClusterError(
                f"node {nodeconfig.NODE_NAME} not Ready after {timeout:.0f}s\n{logs}"
            )
        time.sleep(0.2)
