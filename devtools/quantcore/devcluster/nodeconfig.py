"""What the node is, as data: its addresses, and the configuration files of containerd, the
kubelet, kube-proxy, CNI and CoreDNS. Pure: every function returns text or a dict; node.py
writes them and starts the processes.

Addresses exist only inside the node's network namespace (see netns.py): the node address
sits on an interface of its own, pods on a bridge, and there is no default route, so nothing a pod
sends can leave the machine.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

NODE_NAME = "quantcore-node"
NODE_INTERFACE = "qcnode0"
NODE_INTERFACE_PEER = "qcnode1"
NODE_IP = "10.213.0.2"
NODE_PREFIX = 24
POD_BRIDGE = "qcpods0"
POD_CIDR = "10.214.0.0/24"
CLUSTER_CIDR = "10.214.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # the `kubernetes` Service: the first address of SERVICE_CIDR
DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
API_PORT = 6443
KUBELET_PORT = 10250
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"  # on the namespace's private tmpfs


def network_commands() -> list[list[str]]:
    """iproute2 commands that give the namespace its node address.

    The address sits on one end of a veth pair whose two ends both stay inside the namespace:
    an interface that is up and has carrier, with no link anywhere (this kernel has no dummy
    interfaces). The service range is routed to that interface so that node processes (the API
    server calling a webhook, CoreDNS) can open connections to ClusterIPs: a route lookup
    happens before kube-proxy's DNAT rewrites the destination.
    """
    return [
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "add", NODE_INTERFACE, "type", "veth", "peer", NODE_INTERFACE_PEER],
        ["ip", "addr", "add", f"{NODE_IP}/{NODE_PREFIX}", "dev", NODE_INTERFACE],
        ["ip", "link", "set", NODE_INTERFACE_PEER, "up"],
        ["ip", "link", "set", NODE_INTERFACE, "up"],
        ["ip", "route", "add", SERVICE_CIDR, "dev", NODE_INTERFACE],
    ]


def containerd_config(
    *, root: Path, sandbox_image: str, cni_conf_dir: Path, cni_bin_dir: Path, runc: Path
) -> str:
    """containerd v2 (config version 4) running the CRI plugin for the kubelet.

    restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE, so lowering a sandbox's
    oom_score_adj below containerd's own fails every pod; this keeps it at or above ours.
    Every path containerd would otherwise make on the host (/opt/containerd, NRI's socket) is
    either under `root` or switched off; `imports` is emptied so no host file is read.
    """
    return f"""version = 4
root = {json.dumps(str(root))}
state = "/run/containerd"
imports = []

[plugins.'io.containerd.server.v1.grpc']
  address = {json.dumps(CONTAINERD_SOCKET)}

[plugins.'io.containerd.internal.v1.opt']
  path = {json.dumps(str(root / "opt"))}

[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = {json.dumps(sandbox_image)}

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = "runc"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = {json.dumps(str(runc))}
  SystemdCgroup = false

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = [{json.dumps(str(cni_bin_dir))}]
  conf_dir = {json.dumps(str(cni_conf_dir))}
"""


def cni_config() -> dict[str, Any]:
    """A bridge with host-local addresses, no masquerade and no route beyond the node."""
    return {
        "cniVersion": "1.0.0",
        "name": "quantcore",
        "plugins": [
            {
                "type": "bridge",
                "bridge": POD_BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,  # a pod reaching itself through its own Service
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(
    *,
    cgroup_root: str,
    client_ca: Path,
    serving_cert: Path,
    serving_key: Path,
    resolv_conf: Path,
    pod_logs: Path,
) -> dict[str, Any]:
    """KubeletConfiguration for cgroupfs on this machine's hybrid cgroups.

    failCgroupV1: v1 controllers are mounted (cgroup2 only at /sys/fs/cgroup/unified).
    oomScoreAdj 0: the kubelet may not lower its own score without CAP_SYS_RESOURCE.
    Evictions and image GC are tuned off: the test ground's disk is shared with everything
    else and a test must not see its pods evicted for a full cache.
    """
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(serving_cert),
        "tlsPrivateKeyFile": str(serving_key),
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root,
        "failCgroupV1": False,
        "failSwapOn": False,
        "oomScoreAdj": 0,
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "clusterDNS": [DNS_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(resolv_conf),
        "podLogsDir": str(pod_logs),
        "protectKernelDefaults": False,
        "serializeImagePulls": False,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "maxPods": 110,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
    }


def kube_proxy_config(*, kubeconfig: Path, metrics_port: int, healthz_port: int) -> dict[str, Any]:
    """kube-proxy in iptables mode; maxPerCore 0 leaves the host-wide conntrack table alone."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "clusterCIDR": CLUSTER_CIDR,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def corefile(*, kubeconfig: Path, health_port: int) -> str:
    """CoreDNS answering for the cluster domain only: no forwarder, since nothing outside the
    node exists for a pod; other names get SERVFAIL instead of leaking a query."""
    return f""".:53 {{
    errors
    health 127.0.0.1:{health_port}
    ready 127.0.0.1:{health_port + 1}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
"""


def dns_objects() -> list[dict[str, Any]]:
    """The kube-dns Service and the EndpointSlice that points it at CoreDNS on the node.

    CoreDNS runs as a node process (like the control plane), so the Service has no selector
    and its one endpoint is written here rather than by the EndpointSlice controller.
    """
    ports: Sequence[tuple[str, str]] = (("dns", "UDP"), ("dns-tcp", "TCP"))
    labels = {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
        "spec": {
            "clusterIP": DNS_IP,
            "ports": [
                {"name": name, "port": 53, "targetPort": 53, "protocol": protocol}
                for name, protocol in ports
            ],
        },
    }
    endpoints = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kube-dns-node",
            "namespace": "kube-system",
            "labels": {
                **labels,
                "kubernetes.io/service-name": "kube-dns",
                "endpointslice.kubernetes.io/managed-by": "devcluster.quantcore.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [NODE_IP], "conditions": {"ready": True}, "nodeName": NODE_NAME}
        ],
        "ports": [{"name": name, "port": 53, "protocol": protocol} for name, protocol in ports],
    }
    return [service, endpoints]
