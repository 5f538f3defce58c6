# Helm chart, images and the security baseline (charts/quantcore, images/).
# helm comes from the test ground's pinned build (quantcore.devcluster); checkov lives in its OWN
# virtualenv under the cache: its pins conflict with ours, so it never enters .venv.
CHART := charts/quantcore
CHECKOV_VERSION := 3.3.30
CHECKOV_HOME := $(QUANTCORE_CACHE)/tools/checkov-$(CHECKOV_VERSION)
CHECKOV := $(CHECKOV_HOME)/bin/checkov
CHART_RENDER := .dev/chart
# helm built by `go install` has no default Kubernetes version: render for the test ground's.
KUBE_VERSION = $(shell $(BIN)/python -c 'from quantcore.devcluster import versions; print(versions.KUBERNETES)')
HELM_BIN = $(shell $(BIN)/python -c 'from quantcore.devcluster import binaries; print(binaries.ensure_helm())')

.PHONY: helm chart-rbac chart-lint chart-render chart-checkov checkov

# The pinned helm, built with `go install` into the cache once (shared with the cluster fixture).
helm: setup
	@$(BIN)/python -c 'from quantcore.devcluster import binaries; print(binaries.ensure_helm())'

# The chart's RBAC is generated from the operator's own list (quantcore.operator.rbac).
chart-rbac: setup
	$(BIN)/python charts/rbac_rules.py > $(CHART)/files/rbac.yaml

chart-lint: helm
	$(HELM_BIN) lint --strict $(CHART) --set sampleMarketFeed.enabled=true --set serviceMonitor.enabled=true \
	  --set prometheusRule.enabled=true --set dashboards.enabled=true

# Everything the chart can create, rendered to $(CHART_RENDER)/all.yaml for scanners.
chart-render: helm
	$(OWNERSHIP) claim $(CHART_RENDER) CHART_RENDER=
	$(HELM_BIN) template quantcore $(CHART) --namespace quantcore --include-crds \
	  --kube-version $(KUBE_VERSION) \
	  --set sampleMarketFeed.enabled=true --set serviceMonitor.enabled=true \
	  --set prometheusRule.enabled=true --set dashboards.enabled=true > $(CHART_RENDER)/all.yaml

checkov: $(CHECKOV)
$(CHECKOV): | cache
	$(OWNERSHIP) fresh $(CHECKOV_HOME) CHECKOV_HOME=
	$(PYTHON) -m venv $(CHECKOV_HOME)
	$(CHECKOV_HOME)/bin/pip install -q 'checkov==$(CHECKOV_VERSION)'

# Kubernetes checks on the rendered manifests and Dockerfile checks on the images. Suppressions
# sit beside what they suppress (checkov.io/skip annotations, `# checkov:skip=` lines).
chart-checkov: checkov chart-render
	$(CHECKOV) --quiet --compact --skip-download --framework kubernetes -f $(CHART_RENDER)/all.yaml
	$(CHECKOV) --quiet --compact --skip-download --framework dockerfile -f images/Dockerfile.runtime -f images/Dockerfile.spark

TEST_PREREQS += checkov helm
