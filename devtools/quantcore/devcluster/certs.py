"""The control plane's PKI: a throwaway CA, the API server's serving cert, client certs, and the
service-account signing key pair, made with the openssl CLI (present on every machine)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DAYS = "3650"
CLIENT_EXTENSIONS = (
    "keyUsage=critical,digitalSignature,keyEncipherment",
    "extendedKeyUsage=clientAuth",
)


class CertError(RuntimeError):
    """openssl failed; the message carries its output."""


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class NodePki:
    """The node's identities, signed by the control plane's CA."""

    kubelet_client: KeyPair  # kube-apiserver -> kubelet (logs, exec, port-forward)
    node: KeyPair  # kubelet -> API server, O=system:nodes for the Node authorizer
    kubelet_serving: KeyPair  # the kubelet's own TLS, for the node address
    scheduler: KeyPair  # system:kube-scheduler, bound by the bootstrap RBAC
    kube_proxy: KeyPair  # system:kube-proxy, bound to system:node-proxier
    coredns: KeyPair  # quantcore:coredns, bound by devcluster's own ClusterRole
    kube_router: KeyPair  # quantcore:kube-router, likewise


@dataclass(frozen=True)
class Pki:
    ca: KeyPair
    serving: KeyPair  # kube-apiserver's TLS: 127.0.0.1, localhost and the in-cluster names
    admin: KeyPair  # O=system:masters: the kubeconfig's user, bypasses RBAC
    controller_manager: KeyPair  # system:kube-controller-manager, bound by the bootstrap RBAC
    service_account_key: Path  # signs service-account tokens (apiserver and token controller)
    service_account_pub: Path
    node: NodePki | None = None  # with a node: its identities


def create(directory: Path, *, service_ip: str, node: tuple[str, str] | None = None) -> Pki:
    """Writes a fresh PKI into `directory` (made if missing) and returns its paths.

    `node` (name, address): the node's identities too, and its address among the API
    server's serving names."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = KeyPair(directory / "ca.crt", directory / "ca.key")
    _openssl(
        [
            *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", DAYS),
            *("-keyout", str(ca.key), "-out", str(ca.cert), "-subj", "/CN=quantcore-dev-ca"),
            *("-addext", "basicConstraints=critical,CA:TRUE"),
            *("-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"),
        ]
    )
    serving_names = [
        "IP:127.0.0.1",
        f"IP:{service_ip}",
        *([f"IP:{node[1]}"] if node else []),
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
    ]
    serving = _issue(
        directory,
        "apiserver",
        ca,
        subject="/CN=kube-apiserver",
        extensions=[
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=serverAuth",
            f"subjectAltName={','.join(serving_names)}",
        ],
    )
    admin = _issue(
        directory,
        "admin",
        ca,
        subject="/O=system:masters/CN=quantcore-admin",
        extensions=CLIENT_EXTENSIONS,
    )
    controller_manager = _issue(
        directory,
        "controller-manager",
        ca,
        subject="/CN=system:kube-controller-manager",
        extensions=CLIENT_EXTENSIONS,
    )
    sa_key, sa_pub = directory / "sa.key", directory / "sa.pub"
    _openssl(["genrsa", "-out", str(sa_key), "2048"])
    _openssl(["rsa", "-in", str(sa_key), "-pubout", "-out", str(sa_pub)])
    node_pki = create_node(directory, ca, node_name=node[0], node_ip=node[1]) if node else None
    return Pki(ca, serving, admin, controller_manager, sa_key, sa_pub, node_pki)


def create_node(directory: Path, ca: KeyPair, *, node_name: str, node_ip: str) -> NodePki:
    """The node's certificates, beside the control plane's in `directory`."""

    def client(name: str, subject: str) -> KeyPair:
        return _issue(directory, name, ca, subject=subject, extensions=CLIENT_EXTENSIONS)

    kubelet_serving = _issue(
        directory,
        "kubelet-serving",
        ca,
        subject=f"/CN={node_name}",
        extensions=[
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=serverAuth",
            f"subjectAltName=IP:{node_ip},DNS:{node_name}",
        ],
    )
    return NodePki(
        kubelet_client=client(
            "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client"
        ),
        node=client("node", f"/O=system:nodes/CN=system:node:{node_name}"),
        kubelet_serving=kubelet_serving,
        scheduler=client("scheduler", "/CN=system:kube-scheduler"),
        kube_proxy=client("kube-proxy", "/CN=system:kube-proxy"),
        coredns=client("coredns", "/CN=quantcore:coredns"),
        kube_router=client("kube-router", "/CN=quantcore:kube-router"),
    )


def _issue(
    directory: Path, name: str, ca: KeyPair, *, subject: str, extensions: Sequence[str]
) -> KeyPair:
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    csr = directory / f"{name}.csr"
    ext_file = directory / f"{name}.ext"
    ext_file.write_text("\n".join(extensions) + "\n")
    _openssl(
        [
            *("req", "-new", "-newkey", "rsa:2048", "-nodes"),
            *("-keyout", str(pair.key), "-out", str(csr), "-subj", subject),
        ]
    )
    _openssl(
        [
            *("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key)),
            *("-CAcreateserial", "-days", DAYS, "-out", str(pair.cert), "-extfile", str(ext_file)),
        ]
    )
    csr.unlink()
    ext_file.unlink()
    return pair


def _openssl(args: Sequence[str]) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise CertError("`openssl` is not on PATH; install it to make the control plane's certs")
    done = subprocess.run([openssl, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CertError(f"openssl {' '.join(args[:2])} failed: {done.stderr.strip()}")
