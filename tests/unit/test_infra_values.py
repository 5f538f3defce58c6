"""What infra/ hands the Helm charts and the first MarketFeed, evaluated by real Terraform.

infra/modules/chart-values is provider-less, so `terraform apply` computes its outputs offline;
they must pass charts/quantcore's values.schema.json (after merging over the chart's defaults,
as Helm does) and the MarketFeed CRD's schema.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from quantcore.operator.api import MarketFeed, MarketFeedSpec
from quantcore.operator.planner import serving_objects, spark_application

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "infra" / "modules" / "chart-values"
CHART = ROOT / "charts" / "quantcore"
CRD = ROOT / "crds" / "marketfeed.yaml"
TERRAFORM_VERSION = "1.11.4"  # mk/infra.mk's TERRAFORM_VERSION

MSK_BOOTSTRAP = "b-1.qc.abc123.c2.kafka.eu-west-1.amazonaws.com:9096,b-2.qc.abc123.c2.kafka.eu-west-1.amazonaws.com:9096"
ELASTICACHE = "master.quantcore.abc123.euw1.cache.amazonaws.com"
SPARK_ROLE = "arn:aws:iam::123456789012:role/quantcore-spark-checkpoints"
SERVING_ROLE = "arn:aws:iam::123456789012:role/quantcore-serving-lake"

BASE_INPUTS: dict[str, Any] = {
    "namespace": "quantcore",
    "image": {
        "repository": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/quantcore/runtime",
        "tag": "0.1.0",
        "spark_repository": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/quantcore/spark",
    },
    "private_subnet_cidrs": ["10.40.0.0/18", "10.40.64.0/18", "10.40.128.0/18"],
    "spark_role_arn": SPARK_ROLE,
    "serving_identity": {"service_account": "quantcore-serving", "role_arn": SERVING_ROLE},
    "checkpoint_bucket": "quantcore-checkpoints-20261123",
    "feed": {"name": "majors", "symbols": ["BTCUSDT", "ETHUSDT"]},
}
IN_CLUSTER = {"kafka_mode": "in-cluster", "redis_mode": "in-cluster"}
MANAGED = {
    "kafka_mode": "msk",
    "msk_bootstrap": MSK_BOOTSTRAP,
    "msk_brokers": 3,
    "redis_mode": "elasticache",
    "elasticache_endpoint": ELASTICACHE,
}


@pytest.fixture(scope="session")
def terraform() -> str:
    cache = Path(os.environ.get("QUANTCORE_CACHE", Path.home() / ".cache" / "quantcore"))
    pinned = cache / f"terraform-{TERRAFORM_VERSION}" / "bin" / "terraform"
    found = str(pinned) if pinned.exists() else shutil.which("terraform")
    if found is None:
        pytest.fail("terraform not found: `make infra-terraform` installs the pinned one")
    return found


def _run(terraform: str, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    empty_config = workdir / "empty.tfrc"
    empty_config.touch()
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(empty_config), "TF_IN_AUTOMATION": "1"}
    return subprocess.run(
        [terraform, *args, "-no-color"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def evaluate(
    terraform: str, workdir: Path, inputs: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """Apply a root that only calls the module; its outputs land in local state."""
    config = {
        "module": {"values": {"source": str(MODULE), **inputs}},
        "output": {"all": {"value": "${module.values}"}},
    }
    (workdir / "main.tf.json").write_text(json.dumps(config))
    init = _run(terraform, workdir, "init", "-input=false", "-backend=false")
    assert init.returncode == 0, init.stdout + init.stderr
    return _run(terraform, workdir, "apply", "-auto-approve", "-input=false")


def outputs(terraform: str, workdir: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    applied = evaluate(terraform, workdir, inputs)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    shown = _run(terraform, workdir, "output", "-json", "all")
    assert shown.returncode == 0, shown.stderr
    result: dict[str, Any] = json.loads(shown.stdout)
    return result


@pytest.fixture(scope="session")
def in_cluster(terraform: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return outputs(terraform, tmp_path_factory.mktemp("in-cluster"), {**BASE_INPUTS, **IN_CLUSTER})


@pytest.fixture(scope="session")
def managed(terraform: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return outputs(terraform, tmp_path_factory.mktemp("managed"), {**BASE_INPUTS, **MANAGED})


@pytest.fixture(params=["in_cluster", "managed"])
def either(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each mode's outputs in turn."""
    result: dict[str, Any] = request.getfixturevalue(request.param)
    return result


def merged(defaults: Any, override: Any) -> Any:
    """Helm's coalescing: maps merge key by key, anything else is replaced."""
    if isinstance(defaults, dict) and isinstance(override, dict):
        out = dict(defaults)
        for key, value in override.items():
            out[key] = merged(defaults.get(key), value) if key in defaults else value
        return out
    return override


def chart_schema() -> dict[str, Any]:
    path = CHART / "values.schema.json"
    assert path.exists(), f"{path} is missing: the chart must ship its values schema"
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def crd_schema() -> dict[str, Any]:
    assert CRD.exists(), f"{CRD} is missing"
    crd = yaml.safe_load(CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def test_quantcore_values_pass_the_chart_schema(either: dict[str, Any]) -> None:
    values = either["quantcore_values"]
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    jsonschema.validate(merged(defaults, values), chart_schema())

    # The operator is confined to its namespace and to the platform nodes.
    assert values["operator"]["watchNamespaces"] == ["quantcore"]
    assert values["operator"]["nodeSelector"] == {"quantcore.io/pool": "platform"}


def test_values_that_break_the_chart_schema_are_caught(in_cluster: dict[str, Any]) -> None:
    # The check above has teeth: an uppercase repository (not a valid image name) fails it.
    values = json.loads(json.dumps(in_cluster["quantcore_values"]))
    values["image"]["repository"] = "Quantcore/Runtime"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, chart_schema())


def test_only_the_spark_operator_chart_creates_the_spark_service_account(
    in_cluster: dict[str, Any],
) -> None:
    result = in_cluster
    ours = result["quantcore_values"]["spark"]["serviceAccount"]
    theirs = result["spark_operator_values"]["spark"]

    assert ours["create"] is False
    assert theirs["serviceAccount"]["create"] is True
    assert theirs["serviceAccount"]["name"] == ours["name"] == "spark"
    # IRSA: the only AWS identity in the cluster is the checkpoint role, on this account.
    assert theirs["serviceAccount"]["annotations"] == {"eks.amazonaws.com/role-arn": SPARK_ROLE}
    assert theirs["jobNamespaces"] == ["quantcore"]


def test_serving_pods_read_the_lake_as_the_account_the_chart_annotates(
    either: dict[str, Any],
) -> None:
    account = either["quantcore_values"]["serving"]["serviceAccount"]
    feed = either["marketfeed"]

    # Only this chart creates it, annotated with the read-only role (IRSA) ...
    assert account == {
        "create": True,
        "name": "quantcore-serving",
        "annotations": {"eks.amazonaws.com/role-arn": SERVING_ROLE},
    }
    # ... and the MarketFeed's serving pods run as it, with no AWS keys and no API token.
    spec = MarketFeedSpec.model_validate(feed["spec"])
    deployment = serving_objects(
        MarketFeed(name="majors", namespace="quantcore", uid="u", generation=1, spec=spec)
    )[0]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["name"]
    assert pod["automountServiceAccountToken"] is False
    (serve,) = pod["containers"]
    assert serve["args"][serve["args"].index("--lake") + 1] == feed["spec"]["lake"]["location"]
    assert not [e for e in serve["env"] if e["name"].startswith("AWS_")]


def _block(text: str, header: str) -> str:
    """The body of the block opened by `header` in flattened HCL, braces balanced."""
    start = text.index(header) + len(header)
    depth = 1
    for at in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[at], 0)
        if depth == 0:
            return text[start:at]
    raise AssertionError(f"{header} is not closed")


def test_the_serving_role_reads_the_lake_and_nothing_else() -> None:
    # The root configuration needs the AWS provider; its text is what can be checked offline.
    def flat(name: str) -> str:
        return " ".join((ROOT / "infra" / name).read_text().split())

    checkpoints, irsa, platform = flat("checkpoints.tf"), flat("irsa.tf"), flat("platform.tf")
    policy = _block(checkpoints, 'data "aws_iam_policy_document" "serving_lake" {')
    actions = re.findall(r"actions = \[([^\]]*)\]", policy)
    assert sorted(actions) == ['"kms:Decrypt"', '"s3:GetObject"', '"s3:ListBucket"']
    assert "effect" not in policy  # Allow statements only, each on what is named below
    # Listing only under lake/, objects only under lake/, the key only through S3.
    assert 'variable = "s3:prefix" values = ["${local.lake_prefix}*"]' in policy
    assert 'resources = ["${aws_s3_bucket.checkpoints.arn}/${local.lake_prefix}*"]' in policy
    assert "resources = [aws_kms_key.platform.arn]" in policy
    assert 'variable = "kms:ViaService"' in policy
    assert 'lake_prefix = "lake/"' in checkpoints
    # Assumed through IRSA by the serving account alone, the one the chart creates.
    assert (
        'assume_role_policy = data.aws_iam_policy_document.irsa_assume["serving"].json'
        in checkpoints
    )
    assert 'serving = "${var.namespace}:${local.serving_service_account}"' in irsa
    assert 'serving_service_account = "quantcore-serving"' in checkpoints
    assert (
        "serving_identity = { service_account = local.serving_service_account,"
        " role_arn = aws_iam_role.serving.arn }" in platform
    )


def test_in_cluster_mode_points_at_strimzi_and_the_operators_redis(
    in_cluster: dict[str, Any],
) -> None:
    result = in_cluster
    spec = result["marketfeed"]["spec"]

    # Strimzi's listener is TLS and SCRAM: each role's user from its Secret, the cluster CA.
    assert spec["kafka"] == {
        "bootstrap": "quantcore-kafka-bootstrap.kafka.svc:9092",
        "replication": 1,
        "credentials": {
            "feedSecretName": "majors-kafka-feed",
            "streamSecretName": "majors-kafka-stream",
        },
        "caSecretName": "quantcore-kafka-ca",
    }
    assert result["quantcore_values"]["operator"]["kafka"] == {
        "credentialsSecretName": "quantcore-kafka-operator",
        "caSecretName": "quantcore-kafka-ca",
    }
    assert result["kafka_ca_secret"] == "quantcore-kafka-ca"
    assert spec["redis"] == {"mode": "managed"}
    assert result["redis_url"] is None
    kafka_policy = result["quantcore_values"]["networkPolicies"]["kafka"]
    assert kafka_policy["peers"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kafka"}},
            "podSelector": {"matchLabels": {"strimzi.io/cluster": "quantcore"}},
        }
    ]
    assert result["quantcore_values"]["networkPolicies"]["externalRedis"]["peers"] == []
    # S3 (checkpoints) and STS (IRSA) have public addresses: 443 stays open to any address.
    assert result["quantcore_values"]["networkPolicies"]["apiServer"] == {
        "peers": [],
        "ports": [443],
    }


def test_managed_mode_points_at_msk_and_elasticache_over_tls(managed: dict[str, Any]) -> None:
    result = managed
    spec = result["marketfeed"]["spec"]
    policies = result["quantcore_values"]["networkPolicies"]
    private = [{"ipBlock": {"cidr": c}} for c in BASE_INPUTS["private_subnet_cidrs"]]

    # SASL/SCRAM over TLS, each role's user from its own Secret; MSK's CA is public.
    assert spec["kafka"] == {
        "bootstrap": MSK_BOOTSTRAP,
        "replication": 3,
        "credentials": {
            "feedSecretName": "majors-kafka-feed",
            "streamSecretName": "majors-kafka-stream",
        },
    }
    assert result["quantcore_values"]["operator"]["kafka"] == {
        "credentialsSecretName": "quantcore-kafka-operator"
    }
    assert result["kafka_credentials_secrets"] == {
        "feed": "majors-kafka-feed",
        "stream": "majors-kafka-stream",
        "operator": "quantcore-kafka-operator",
    }
    assert policies["kafka"]["ports"] == [9096]
    assert result["kafka_ca_secret"] is None
    assert spec["redis"] == {
        "mode": "external",
        "url": f"rediss://{ELASTICACHE}:6379/0",
        "credentialsSecretName": "majors-redis-users",
    }
    assert result["redis_credentials_secret"] == "majors-redis-users"
    # Egress to the managed services is limited to the private subnets they live in.
    assert policies["kafka"]["peers"] == private
    assert policies["externalRedis"] == {"peers": private, "ports": [6379]}


def test_marketfeed_passes_the_crd_schema(either: dict[str, Any]) -> None:
    feed = either["marketfeed"]

    jsonschema.validate(feed, crd_schema())
    assert (
        feed["spec"]["spark"]["checkpoint"]
        == "s3a://quantcore-checkpoints-20261123/checkpoints/majors"
    )
    assert feed["spec"]["spark"]["serviceAccount"] == "spark"
    # The lake beside the checkpoints, under the prefix the Spark role may write and the
    # bucket's lifecycle rule expires after the same retention (checkpoints.tf).
    assert feed["spec"]["lake"] == {
        "location": "s3a://quantcore-checkpoints-20261123/lake",
        "retentionDays": 7,
    }
    # Secure by default: TLS from a Secret named after the feed; History as the serving role.
    assert feed["spec"]["serving"] == {
        "tls": {"secretName": "majors-serving-tls"},
        "serviceAccount": "quantcore-serving",
    }


def test_spark_pods_select_the_spark_node_group(either: dict[str, Any]) -> None:
    spark = either["marketfeed"]["spec"]["spark"]

    # nodes.tf labels every node quantcore.io/pool=<group>; the pool is not tainted by default.
    assert spark["nodeSelector"] == {"quantcore.io/pool": "spark"}
    assert spark["tolerations"] == []


def test_a_dedicated_spark_pool_is_tolerated(terraform: str, tmp_path: Path) -> None:
    pool = {"label_key": "quantcore.io/pool", "name": "spark", "dedicated": True}
    result = outputs(terraform, tmp_path, {**BASE_INPUTS, **IN_CLUSTER, "spark_pool": pool})
    feed = result["marketfeed"]

    jsonschema.validate(feed, crd_schema())
    spark = feed["spec"]["spark"]
    assert spark["nodeSelector"] == {"quantcore.io/pool": "spark"}
    # The taint nodes.tf puts on a dedicated group (NO_SCHEDULE is EKS's NoSchedule).
    assert spark["tolerations"] == [
        {"key": "quantcore.io/pool", "operator": "Equal", "value": "spark", "effect": "NoSchedule"}
    ]
    # And the operator turns them into the Spark pods' templates.
    spec = MarketFeedSpec.model_validate(feed["spec"])
    app = spark_application(
        MarketFeed(name="majors", namespace="quantcore", uid="u", generation=1, spec=spec), 6
    )
    for role in ("driver", "executor"):
        pod = app["spec"][role]["template"]["spec"]
        assert pod["nodeSelector"] == spark["nodeSelector"]
        assert pod["tolerations"] == spark["tolerations"]


def test_nodes_tf_labels_and_taints_with_the_key_the_module_selects() -> None:
    # The root configuration needs the AWS provider; its text is what can be checked offline.
    def flat(name: str) -> str:
        return " ".join((ROOT / "infra" / name).read_text().split())

    nodes, platform = flat("nodes.tf"), flat("platform.tf")
    assert 'pool_label = "quantcore.io/pool"' in nodes
    assert "labels = { (local.pool_label) = each.key }" in nodes
    assert "key = local.pool_label" in nodes
    assert 'effect = "NO_SCHEDULE"' in nodes
    assert "label_key = local.pool_label" in platform
    assert "dedicated = var.spark_nodes.dedicated" in platform


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"kafka_mode": "kinesis"}, "kafka_mode"),
        ({"redis_mode": "memcached"}, "redis_mode"),
        ({**MANAGED, "msk_bootstrap": ""}, "msk_bootstrap"),
        ({**MANAGED, "elasticache_endpoint": "not a host"}, "elasticache_endpoint"),
        (
            {"serving_identity": {"service_account": "Serving_SA", "role_arn": SERVING_ROLE}},
            "serving_identity.service_account",
        ),
    ],
    ids=[
        "kafka-mode",
        "redis-mode",
        "msk-without-bootstrap",
        "bad-elasticache-host",
        "bad-serving-account",
    ],
)
def test_bad_inputs_are_rejected_with_the_variable_named(
    terraform: str, tmp_path: Path, change: dict[str, Any], named: str
) -> None:
    applied = evaluate(terraform, tmp_path, {**BASE_INPUTS, **IN_CLUSTER, **change})

    assert applied.returncode != 0
    assert f"{named}:" in applied.stdout + applied.stderr
