# Alert rules and dashboards (charts/quantcore/files/): promtool checks and unit-tests the one
# rule file the chart renders, and the dashboards are generated once from charts/dashboards.py.
# promtool and prometheus come from Debian's `prometheus` package (apt-get, when missing).
RULES := charts/quantcore/files/alerts/quantcore-rules.yaml
RULE_TESTS := $(wildcard tests/rules/*.test.yaml)
PROMTOOL ?= promtool

.PHONY: prometheus-tools rules-test chart-dashboards

# Installed only when missing, like the services' system packages (mk/services.mk).
prometheus-tools:
	@command -v $(PROMTOOL) >/dev/null && command -v prometheus >/dev/null || { \
	  echo "installing prometheus (promtool)"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; }

rules-test: prometheus-tools
	$(PROMTOOL) check rules $(RULES)
	$(PROMTOOL) test rules $(RULE_TESTS)

chart-dashboards: setup
	$(BIN)/python charts/dashboards.py charts/quantcore/files/dashboards

TEST_PREREQS += rules-test
