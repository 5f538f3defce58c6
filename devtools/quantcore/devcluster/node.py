"""Starts the node's processes inside its namespace: containerd (with Debian's runc and CNI
plugins), the kubelet, kube-proxy, CoreDNS and the NetworkPolicy engine. The configuration
they get is nodeconfig's; this module writes it into the cluster directory and starts them.

CoreDNS runs as a node process beside the control plane rather than as a pod: the cluster's
DNS then needs no image, and it answers for Services from the first pod on. The NetworkPolicy
engine (kube-router's firewall alone) runs the same way, so policies hold from the first pod on.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from quantcore.devcluster import certs, controlplane, kubeconfig, netns, nodeconfig
from quantcore.devcluster.binaries import NodeBinaries
from quantcore.devcluster.netns import NamespaceError, NodeNamespace

# Inside the node namespace: the components' health and metrics ports on its loopback.
KUBE_PROXY_METRICS_PORT = 10249
KUBE_PROXY_HEALTHZ_PORT = 10256
COREDNS_HEALTH_PORT = 8080
KUBE_ROUTER_HEALTH_PORT = 20244
# kube-router's own filter chain for forwarded traffic: a pod it enforces for has rules here.
KUBE_ROUTER_FORWARD_CHAIN = "KUBE-ROUTER-FORWARD"


@dataclass(frozen=True)
class NodePaths:
    """Where the node keeps its state: under the cluster directory, but for the kubelet's."""

    root: Path

    @property
    def containerd(self) -> Path:
        return self.root / "containerd"

    @property
    def kubelet(self) -> Path:
        """The kubelet's root as it sees it: a short path inside the namespace, where
        kubelet_disk is bind-mounted (netns.KUBELET_ROOT). The kubelet makes unix sockets below
        its root (pod-resources/<10 digits>), whose whole path must fit in 107 bytes: under a
        long cluster directory (a test's tmp path) it did not, and the kubelet stopped at
        start."""
        return Path(netns.KUBELET_ROOT)

    @property
    def kubelet_disk(self) -> Path:
        """Where the kubelet's root is on the host's disk (removed with the node)."""
        return self.root / "kubelet"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def logs(self) -> Path:
        """Bind-mounted at /var/log inside the namespace; pod logs land in logs/pods."""
        return self.root / "log"


def start(
    directory: Path,
    paths: NodePaths,
    binaries: NodeBinaries,
    pki: certs.Pki,
    namespace: NodeNamespace,
    *,
    cgroup_root: str,
    sandbox_image: str,
    die_with_parent: bool,
    timeout: float = 60.0,
) -> dict[str, int]:
    """Starts containerd and waits for its socket, then the kubelet, kube-proxy and CoreDNS.

    Returns their pids. Readiness of the node as a whole (Ready, DNS answering) is checked
    through the API by the caller, which holds a client.
    """
    assert pki.node is not None, "the PKI was made for a node"
    node_pki = pki.node
    config = paths.config
    config.mkdir(parents=True, exist_ok=True)

    def component_kubeconfig(name: str, user: str, identity: certs.KeyPair) -> Path:
        return _component_kubeconfig(config, pki, name, user, identity)

    def spawn(name: str, command: list[str], env: dict[str, str] | None = None) -> int:
        return controlplane.spawn(
            directory, name, namespace.enter(command), die_with_parent, env=env
        )

    pids: dict[str, int] = {}
    cni_conf = config / "cni"
    cni_conf.mkdir(exist_ok=True)
    (cni_conf / "10-quantcore.conflist").write_text(json.dumps(nodeconfig.cni_config(), indent=2))
    containerd_toml = config / "containerd.toml"
    containerd_toml.write_text(
        nodeconfig.containerd_config(
            root=paths.containerd,
            sandbox_image=sandbox_image,
            cni_conf_dir=cni_conf,
            cni_bin_dir=binaries.cni_plugins,
            runc=binaries.runc,
        )
    )
    # containerd finds its shim on PATH.
    path = f"{binaries.containerd_shim.parent}:{binaries.runc.parent}:{os.environ.get('PATH', '')}"
    pids["containerd"] = spawn(
        "containerd",
        [str(binaries.containerd), "--config", str(containerd_toml)],
        env={**os.environ, "PATH": path},
    )
    controlplane.wait_ready(
        directory,
        "containerd",
        lambda: _runs(
            namespace, [str(binaries.ctr), "-a", nodeconfig.CONTAINERD_SOCKET, "version"]
        ),
        timeout,
    )

    resolv_conf = config / "resolv.conf"
    # No upstream resolver exists for a pod: cluster names come from CoreDNS alone.
    resolv_conf.write_text("# quantcore test ground: cluster DNS only\n")
    kubelet_yaml = config / "kubelet.yaml"
    kubelet_yaml.write_text(
        yaml.safe_dump(
            nodeconfig.kubelet_config(
                cgroup_root=cgroup_root,
                client_ca=pki.ca.cert,
                serving_cert=node_pki.kubelet_serving.cert,
                serving_key=node_pki.kubelet_serving.key,
                resolv_conf=resolv_conf,
                pod_logs=Path("/var/log/pods"),
            )
        )
    )
    pids["kubelet"] = spawn(
        "kubelet",
        [
            str(binaries.kubelet),
            f"--config={kubelet_yaml}",
            f"--kubeconfig={component_kubeconfig('kubelet', 'system:node', node_pki.node)}",
            f"--root-dir={paths.kubelet}",
            f"--hostname-override={nodeconfig.NODE_NAME}",
            f"--node-ip={nodeconfig.NODE_IP}",
            "--v=1",
        ],
        env={**os.environ, "PATH": path},
    )

    proxy_yaml = config / "kube-proxy.yaml"
    proxy_yaml.write_text(
        yaml.safe_dump(
            nodeconfig.kube_proxy_config(
                kubeconfig=component_kubeconfig(
                    "kube-proxy", "system:kube-proxy", node_pki.kube_proxy
                ),
                metrics_port=KUBE_PROXY_METRICS_PORT,
                healthz_port=KUBE_PROXY_HEALTHZ_PORT,
            )
        )
    )
    pids["kube-proxy"] = spawn("kube-proxy", [str(binaries.kube_proxy), f"--config={proxy_yaml}"])

    corefile = config / "Corefile"
    corefile.write_text(
        nodeconfig.corefile(
            kubeconfig=component_kubeconfig("coredns", "quantcore:coredns", node_pki.coredns),
            health_port=COREDNS_HEALTH_PORT,
        )
    )
    pids["coredns"] = spawn("coredns", [str(binaries.coredns), "-conf", str(corefile)])

    return pids


def start_firewall(
    directory: Path,
    paths: NodePaths,
    binaries: NodeBinaries,
    pki: certs.Pki,
    namespace: NodeNamespace,
    *,
    die_with_parent: bool,
    timeout: float = 60.0,
) -> int:
    """Starts kube-router's NetworkPolicy firewall once the node is registered (it reads its
    own Node at start and exits without it); returns when it enforces, with its pid."""
    assert pki.node is not None, "the PKI was made for a node"
    identity = _component_kubeconfig(
        paths.config, pki, "kube-router", "quantcore:kube-router", pki.node.kube_router
    )
    command = [
        str(binaries.kube_router),
        "--run-firewall=true",
        "--run-router=false",  # the CNI bridge routes
        "--run-service-proxy=false",  # kube-proxy serves Services
        "--enable-cni=false",
        f"--kubeconfig={identity}",
        f"--hostname-override={nodeconfig.NODE_NAME}",
        f"--service-cluster-ip-range={nodeconfig.SERVICE_CIDR}",
        f"--health-port={KUBE_ROUTER_HEALTH_PORT}",
        "--v=1",
    ]
    pid = controlplane.spawn(directory, "kube-router", namespace.enter(command), die_with_parent)
    # Its chains appear once its controller runs: from then on it enforces.
    controlplane.wait_ready(
        directory,
        "kube-router",
        lambda: _runs(namespace, ["iptables", "-S", KUBE_ROUTER_FORWARD_CHAIN]),
        timeout,
    )
    return pid


def _component_kubeconfig(
    config: Path, pki: certs.Pki, name: str, user: str, identity: certs.KeyPair
) -> Path:
    server = f"https://127.0.0.1:{nodeconfig.API_PORT}"
    return kubeconfig.write(
        config / f"{name}.kubeconfig",
        kubeconfig.render(server=server, ca_cert=pki.ca.cert, user=user, client=identity),
    )


def _runs(namespace: NodeNamespace, command: list[str]) -> bool:
    try:
        namespace.run(command)
    except (NamespaceError, subprocess.TimeoutExpired):
        return False  # not ready yet; the component's log tells why if it never is
    return True
