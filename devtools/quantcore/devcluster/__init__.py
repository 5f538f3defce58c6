"""A real Kubernetes control plane on loopback for tests: etcd, kube-apiserver and
kube-controller-manager built from the registries, no kubelet (pods stay Pending)."""
