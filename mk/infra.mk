# Terraform for EKS (infra/): format, validate and checkov, offline.
# terraform is the pinned release: the one on PATH if its version matches, else built with
# `go install` into the cache. The aws and helm providers cannot be had here: the Terraform
# registry is not reachable, and the Go module proxy refuses their release tags (their go.mod
# lacks the /vN suffix). So the provider-free configurations are validated everywhere, and the
# root configuration wherever a filesystem mirror of the providers exists (TF_MIRROR).
TERRAFORM_VERSION := 1.11.4
TF_HOME := $(QUANTCORE_CACHE)/terraform-$(TERRAFORM_VERSION)
TF := $(TF_HOME)/bin/terraform
TF_MIRROR := $(QUANTCORE_CACHE)/terraform/providers
TF_WORK := $(QUANTCORE_CACHE)/terraform/validate
TF_CLI_CONFIG := $(QUANTCORE_CACHE)/terraform/offline.tfrc
# 1: a missing provider mirror fails `make test` (for machines that have one).
INFRA_REQUIRE_PROVIDERS ?= 0
# Configurations that need no provider: validated on every machine.
TF_PROVIDER_FREE := infra/modules/chart-values

.PHONY: infra-terraform infra-fmt infra-validate infra-checkov infra-check

infra-terraform: $(TF)
$(TF): | cache
	mkdir -p $(TF_HOME)/bin
	@if command -v terraform >/dev/null && \
	    [ "$$(terraform version -json 2>/dev/null | sed -n 's/.*"terraform_version": *"\([^"]*\)".*/\1/p')" = "$(TERRAFORM_VERSION)" ]; then \
	  echo "terraform $(TERRAFORM_VERSION) from PATH"; ln -sf "$$(command -v terraform)" $@; \
	else \
	  echo "building terraform $(TERRAFORM_VERSION) with go install"; \
	  GOBIN=$(TF_HOME)/bin nice -n 10 go install github.com/hashicorp/terraform@v$(TERRAFORM_VERSION); \
	fi

$(TF_CLI_CONFIG): | cache
	mkdir -p $(dir $@)
	printf 'provider_installation {\n  filesystem_mirror {\n    path = "%s"\n  }\n}\n' "$(TF_MIRROR)" > $@

infra-fmt: $(TF) $(TF_CLI_CONFIG)
	TF_CLI_CONFIG_FILE=$(TF_CLI_CONFIG) $(TF) fmt -check -recursive -diff infra

# Validated in copies under the cache, so `terraform init` leaves no .terraform/ or lock file
# in the work tree.
infra-validate: $(TF) $(TF_CLI_CONFIG) cache
	@for dir in $(TF_PROVIDER_FREE); do \
	  work=$(TF_WORK)/$$(basename $$dir); $(OWNERSHIP) fresh $$work TF_WORK= && cp -r $$dir/. $$work/ && \
	  (cd $$work && export TF_CLI_CONFIG_FILE=$(TF_CLI_CONFIG) TF_IN_AUTOMATION=1 && \
	   $(TF) init -backend=false -input=false -no-color >init.log 2>&1 || { cat init.log; exit 1; }; \
	   echo "terraform validate $$dir:"; $(TF) validate -no-color) || exit 1; \
	done
	@if ! ls $(TF_MIRROR)/registry.terraform.io/hashicorp/{aws,helm,kubernetes}/*/linux_amd64/terraform-provider-* >/dev/null 2>&1; then \
	  echo "infra-validate: root configuration NOT VALIDATED: no aws/helm/kubernetes provider mirror at $(TF_MIRROR)" >&2; \
	  echo "  (the registries this machine reaches do not serve them; fmt, checkov and the module above still gate)" >&2; \
	  exit $$(( $(INFRA_REQUIRE_PROVIDERS) ? 1 : 0 )); \
	fi; \
	$(OWNERSHIP) fresh $(TF_WORK)/root TF_WORK= && \
	cp -r infra/*.tf infra/modules $(TF_WORK)/root/ && cd $(TF_WORK)/root && \
	export TF_CLI_CONFIG_FILE=$(TF_CLI_CONFIG) TF_IN_AUTOMATION=1 && \
	$(TF) init -backend=false -input=false -no-color >init.log 2>&1 || { cat init.log; exit 1; } && \
	$(TF) validate -no-color

# No failed check: each suppression is a `# checkov:skip=ID:reason` beside its resource. Twice:
# with the defaults (in-cluster Kafka and Redis) and with the managed services, whose
# resources (count 0 by default) checkov otherwise leaves out.
infra-checkov: checkov
	$(CHECKOV) --quiet --compact --skip-download --framework terraform -d infra
	$(CHECKOV) --quiet --compact --skip-download --framework terraform -d infra \
	  --var-file infra/checkov/managed-services.tfvars

infra-check: infra-fmt infra-validate infra-checkov

TEST_PREREQS += infra-fmt infra-validate infra-checkov
