"""infra/variables.tf's validations, evaluated by real Terraform: the file alone needs no
provider, so `terraform apply` on a copy of it checks every input rule offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
VARIABLES = ROOT / "infra" / "variables.tf"
TERRAFORM_VERSION = "1.11.4"  # mk/infra.mk's TERRAFORM_VERSION


@pytest.fixture(scope="module")
def terraform() -> str:
    cache = Path(os.environ.get("QUANTCORE_CACHE", Path.home() / ".cache" / "quantcore"))
    pinned = cache / f"terraform-{TERRAFORM_VERSION}" / "bin" / "terraform"
    found = str(pinned) if pinned.exists() else shutil.which("terraform")
    if found is None:
        pytest.fail("terraform not found: `make infra-terraform` installs the pinned one")
    return found


def apply(
    terraform: str, workdir: Path, inputs: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    shutil.copy(VARIABLES, workdir / "variables.tf")
    (workdir / "terraform.tfvars.json").write_text(json.dumps(inputs))
    (workdir / "empty.tfrc").touch()
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(workdir / "empty.tfrc"), "TF_IN_AUTOMATION": "1"}
    return subprocess.run(
        [terraform, "apply", "-auto-approve", "-input=false", "-no-color"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_defaults_are_valid(terraform: str, tmp_path: Path) -> None:
    applied = apply(terraform, tmp_path, {})
    assert applied.returncode == 0, applied.stdout + applied.stderr


def test_a_public_endpoint_limited_to_one_address_is_valid(terraform: str, tmp_path: Path) -> None:
    applied = apply(
        terraform, tmp_path, {"api_public_access": True, "api_public_cidrs": ["203.0.113.7/32"]}
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr


@pytest.mark.parametrize(
    ("inputs", "named"),
    [
        ({"api_public_access": True}, "api_public_cidrs"),
        ({"api_public_access": True, "api_public_cidrs": ["0.0.0.0/0"]}, "api_public_cidrs"),
        ({"kubernetes_version": "1.27"}, "kubernetes_version"),
        ({"name": "QuantCore"}, "name"),
        ({"region": "europe"}, "region"),
        ({"vpc_cidr": "10.0.0.0/24"}, "vpc_cidr"),
        ({"availability_zones": 1}, "availability_zones"),
        ({"kafka_mode": "kinesis"}, "kafka_mode"),
        ({"redis_mode": "memcached"}, "redis_mode"),
        (
            {
                "spark_nodes": {
                    "instance_types": ["c7i.xlarge"],
                    "capacity_type": "RESERVED",
                    "min_size": 0,
                    "desired_size": 1,
                    "max_size": 2,
                    "dedicated": False,
                }
            },
            "spark_nodes.capacity_type",
        ),
        (
            {
                "platform_nodes": {
                    "instance_types": ["m7i.large"],
                    "min_size": 3,
                    "desired_size": 2,
                    "max_size": 6,
                }
            },
            "platform_nodes",
        ),
        (
            {
                "image": {
                    "repository": "quantcore/runtime",
                    "tag": "latest",
                    "spark_repository": "q/s",
                }
            },
            "image",
        ),
        ({"log_retention_days": 10}, "log_retention_days"),
        ({"feed_symbols": ["btcusdt"]}, "feed_symbols"),
        (
            {
                "redis_passwords": {
                    "relay": "too-short",
                    "serve": "s" * 32,
                    "disabled_default": "d" * 32,
                }
            },
            "redis_passwords",
        ),
        (
            {
                "kafka_passwords": {
                    "feed": "too-short",
                    "stream": "s" * 32,
                    "operator": "o" * 32,
                    "admin": "a" * 32,
                }
            },
            "kafka_passwords",
        ),
    ],
    ids=[
        "public-without-cidrs",
        "public-to-the-internet",
        "unsupported-kubernetes",
        "uppercase-name",
        "bad-region",
        "small-vpc",
        "one-zone",
        "kafka-mode",
        "redis-mode",
        "capacity-type",
        "min-above-desired",
        "latest-tag",
        "retention-cloudwatch-lacks",
        "lowercase-symbol",
        "short-redis-password",
        "short-kafka-password",
    ],
)
def test_bad_inputs_are_rejected_with_the_variable_named(
    terraform: str, tmp_path: Path, inputs: dict[str, Any], named: str
) -> None:
    applied = apply(terraform, tmp_path, inputs)

    assert applied.returncode != 0, f"{inputs} was accepted"
    assert f"{named}:" in applied.stdout + applied.stderr
