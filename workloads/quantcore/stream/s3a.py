"""The S3A settings the stream job sets when its checkpoint is on S3 (`s3a://bucket/prefix`).

The jars (hadoop-aws for pyspark's Hadoop release and the AWS SDK v2 bundle) are on the Spark
image's classpath; local runs pass them with `--jars`.

Credentials: S3A's own default chain (keys in fs.s3a.*, environment keys, instance profile)
lacks web identity, which IRSA on EKS uses (AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE). The
job therefore asks for the AWS SDK's default chain, which has environment keys, web identity,
profiles, container (EKS Pod Identity) and instance credentials, after S3A's fs.s3a.* keys.

A custom S3 API (MinIO, moto, a VPC endpoint) is named in the driver's environment with the
SDKs' own variables, read here:
- AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL): http(s)://host:port -> fs.s3a.endpoint, and
  path-style access on (such servers rarely serve bucket names as host names);
- QUANTCORE_S3_PATH_STYLE=true|false overrides that choice;
- AWS_REGION (or AWS_DEFAULT_REGION) -> fs.s3a.endpoint.region.
Any of them can also be set as Spark configuration (sparkConf `spark.hadoop.fs.s3a.endpoint`,
`spark.hadoop.fs.s3a.path.style.access`, `spark.hadoop.fs.s3a.endpoint.region`, ...): what
spark-submit was given wins over what is derived here (quantcore.stream.session). Executors
write state store files to the checkpoint too: they get these settings through the Spark
configuration, but their credentials come from their own pod (environment, service account).
"""

from __future__ import annotations

from collections.abc import Mapping

PREFIX = "spark.hadoop.fs.s3a."
# Tried in order; each passes when it has nothing (S3A's fs.s3a.* keys, then the SDK chain).
CREDENTIAL_PROVIDERS = (
    "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider",
    "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
    "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider",
)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def endpoint(environ: Mapping[str, str]) -> str:
    """The custom S3 endpoint the environment names, or "" for AWS's own."""
    return environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or ""


def s3a_conf(environ: Mapping[str, str]) -> dict[str, str]:
    """Spark settings (`spark.hadoop.fs.s3a.*`) for a checkpoint on S3, from `environ`.

    Raises ValueError for a QUANTCORE_S3_PATH_STYLE that is neither true nor false.
    """
    conf = {PREFIX + "aws.credentials.provider": ",".join(CREDENTIAL_PROVIDERS)}
    custom = endpoint(environ)
    path_style = bool(custom)
    raw = environ.get("QUANTCORE_S3_PATH_STYLE", "").strip().lower()
    if raw in _TRUE:
        path_style = True
    elif raw in _FALSE:
        path_style = False
    elif raw:
        raise ValueError(f"QUANTCORE_S3_PATH_STYLE must be true or false, got {raw!r}")
    if custom:
        conf[PREFIX + "endpoint"] = custom
    conf[PREFIX + "path.style.access"] = "true" if path_style else "false"
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        conf[PREFIX + "endpoint.region"] = region
    return conf
