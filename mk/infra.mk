# Terraform for EKS (infra/): format, validate and checkov, offline.
# terraform is the pinned release: the one on PATH if its version matches, else built with
# `go install` into the cache. The providers cannot come from the Terraform registry (not
# reachable here): infra/providers.sh builds them from source into a filesystem mirror, and a
# CLI config file points `terraform init` at it.
TERRAFORM_VERSION := 1.11.4
TF_HOME := $(QUANTCORE_CACHE)/terraform-$(TERRAFORM_VERSION)
TF := $(TF_HOME)/bin/terraform
TF_MIRROR := $(QUANTCORE_CACHE)/terraform/providers
TF_WORK := $(QUANTCORE_CACHE)/terraform/validate
TF_CLI_CONFIG := $(QUANTCORE_CACHE)/terraform/offline.tfrc
# 1: missing providers fail `make test`; otherwise validation is reported as NOT RUN (loudly)
# and fmt and checkov still gate. `make test` never builds them: the aws provider's build takes
# over an hour on a busy 2-core machine. `make infra-providers` does, once per version.
INFRA_REQUIRE_PROVIDERS ?= 0

.PHONY: infra-terraform infra-providers infra-fmt infra-validate infra-checkov infra-check

infra-terraform: $(TF)
$(TF):
	mkdir -p $(TF_HOME)/bin
	@if command -v terraform >/dev/null && \
	    [ "$$(terraform version -json 2>/dev/null | sed -n 's/.*"terraform_version": *"\([^"]*\)".*/\1/p')" = "$(TERRAFORM_VERSION)" ]; then \
	  echo "terraform $(TERRAFORM_VERSION) from PATH"; ln -sf "$$(command -v terraform)" $@; \
	else \
	  echo "building terraform $(TERRAFORM_VERSION) with go install"; \
	  GOBIN=$(TF_HOME)/bin nice -n 10 go install github.com/hashicorp/terraform@v$(TERRAFORM_VERSION); \
	fi

$(TF_CLI_CONFIG):
	mkdir -p $(dir $@)
	printf 'provider_installation {\n  filesystem_mirror {\n    path = "%s"\n  }\n}\n' "$(TF_MIRROR)" > $@

infra-providers:
	infra/providers.sh $(TF_MIRROR)

infra-fmt: $(TF) $(TF_CLI_CONFIG)
	TF_CLI_CONFIG_FILE=$(TF_CLI_CONFIG) $(TF) fmt -check -recursive -diff infra

# Validated in a copy under the cache, so `terraform init` leaves no .terraform/ or lock file
# (hashes of locally built providers) in the work tree.
infra-validate: $(TF) $(TF_CLI_CONFIG)
	@if ! infra/providers.sh --check $(TF_MIRROR); then \
	  echo "infra-validate: NOT RUN: providers missing; \`make infra-providers\` builds them from source" >&2; \
	  exit $$(( $(INFRA_REQUIRE_PROVIDERS) ? 1 : 0 )); \
	fi; \
	rm -rf $(TF_WORK) && mkdir -p $(TF_WORK) && \
	cp -r infra/*.tf infra/modules $(TF_WORK)/ && cd $(TF_WORK) && \
	export TF_CLI_CONFIG_FILE=$(TF_CLI_CONFIG) TF_IN_AUTOMATION=1 && \
	$(TF) init -backend=false -input=false -no-color >init.log 2>&1 || { cat init.log; exit 1; } && \
	$(TF) validate -no-color

# No failed check: each suppression is a `# checkov:skip=ID:reason` beside its resource.
infra-checkov: checkov
	$(CHECKOV) --quiet --compact --skip-download --framework terraform -d infra

infra-check: infra-fmt infra-validate infra-checkov

TEST_PREREQS += infra-fmt infra-validate infra-checkov
