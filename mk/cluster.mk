# Kubernetes test ground: etcd, kube-apiserver, kube-controller-manager and helm built from the
# Go module registry into $(QUANTCORE_CACHE), and a control plane on loopback (no kubelet).
CLUSTER_DIR := $(CURDIR)/.dev/cluster
CLUSTER_KUBECONFIG := $(CURDIR)/.dev/kubeconfig
DEVCLUSTER := $(BIN)/python -m quantcore.devcluster

.PHONY: cluster-binaries cluster-crds cluster-up cluster-down

# Cold: several minutes of `go build` (kube-apiserver is large); cached afterwards.
cluster-binaries: setup
	$(DEVCLUSTER) build

cluster-crds: setup
	$(DEVCLUSTER) crds

# Starts a fresh control plane, installs the third-party CRDs, writes .dev/kubeconfig.
cluster-up: cluster-binaries cluster-crds
	$(DEVCLUSTER) up --dir $(CLUSTER_DIR) --kubeconfig $(CLUSTER_KUBECONFIG)

cluster-down: setup
	$(DEVCLUSTER) down --dir $(CLUSTER_DIR)

TEST_PREREQS += cluster-binaries cluster-crds
