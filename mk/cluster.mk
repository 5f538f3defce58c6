# Kubernetes test ground (quantcore.devcluster): etcd, the Kubernetes control plane and node
# commands, containerd, CoreDNS and helm built from the Go module registry into
# $(QUANTCORE_CACHE); runc, the CNI plugins and iptables from Debian. `make cluster-up` starts a
# cluster with a real node inside a network namespace of its own and loads the project's
# images into it; NODE=0 starts the control plane alone on loopback (fast; pods stay Pending).
CLUSTER_DIR := $(CURDIR)/.dev/cluster
CLUSTER_KUBECONFIG := $(CURDIR)/.dev/kubeconfig
DEVCLUSTER := $(BIN)/python -m quantcore.devcluster
NODE ?= 1

.PHONY: cluster-deps cluster-binaries cluster-crds cluster-up cluster-down

# What a node needs from Debian, installed only when missing.
cluster-deps:
	@missing=(); \
	[ -x /usr/sbin/runc ] || missing+=(runc); \
	[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins); \
	command -v iptables >/dev/null || missing+=(iptables); \
	command -v conntrack >/dev/null || missing+=(conntrack); \
	command -v ipset >/dev/null || missing+=(ipset); \
	command -v nft >/dev/null || missing+=(nftables); \
	command -v nsenter >/dev/null || missing+=(util-linux); \
	command -v ip >/dev/null || missing+=(iproute2); \
	if (( $${#missing[@]} )); then \
	  echo "installing $${missing[*]}"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$${missing[@]}"; \
	fi

# Cold: several minutes of `go build` (the Kubernetes commands are large); cached afterwards.
cluster-binaries: setup cluster-deps
	nice -n 10 $(DEVCLUSTER) build

cluster-crds: setup
	$(DEVCLUSTER) crds

# Starts a fresh cluster, installs the third-party CRDs, writes .dev/kubeconfig.
ifeq ($(NODE),0)
cluster-up: cluster-binaries cluster-crds
	$(DEVCLUSTER) up --no-node --dir $(CLUSTER_DIR) --kubeconfig $(CLUSTER_KUBECONFIG)
else
cluster-up: cluster-binaries cluster-crds images
	$(DEVCLUSTER) up --dir $(CLUSTER_DIR) --kubeconfig $(CLUSTER_KUBECONFIG)
endif

cluster-down: setup
	$(DEVCLUSTER) down --dir $(CLUSTER_DIR)

TEST_PREREQS += cluster-binaries cluster-crds
