# Terraform and provider versions. Providers are pinned exactly: what `make infra-validate`
# checks (built from source, see providers.sh) is what `terraform init` installs.
terraform {
  # 1.9+: variable validations may refer to other variables.
  required_version = ">= 1.9.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "5.45.0"
    }
    helm = {
      source  = "hashicorp/helm"
      version = "3.1.2"
    }
  }
}
