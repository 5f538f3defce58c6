"""The connector jars that match the installed pyspark: Kafka, and S3A for checkpoints.

`spark_jars()` resolves `spark-sql-kafka-0-10` (plus the dependency jars pyspark does not
already ship) into the cache; `quantcore.stream.session.build_session` starts a local[2]
SparkSession that loads them. `s3a_jars()` resolves hadoop-aws for the Hadoop release pyspark
bundles, with the AWS SDK v2 bundle it is built against. The Spark image carries both sets
(quantcore.devcluster.images stages them); local runs pass them with `--jars`.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from quantcore.devservices import maven

SCALA_VERSION = "2.13"


def pyspark_version() -> str:
    return version("pyspark")


def connector_version(jars: list[Path]) -> str:
    """The version of the resolved spark-sql-kafka connector jar."""
    for jar in jars:
        if artifact_name(jar.name) == f"spark-sql-kafka-0-10_{SCALA_VERSION}":
            return jar.name.removesuffix(".jar").rsplit("-", 1)[1]
    raise LookupError("no spark-sql-kafka-0-10 jar among " + ", ".join(j.name for j in jars))


def artifact_name(jar_file: str) -> str:
    """`kafka-clients-4.1.0.jar` -> `kafka-clients` (the version starts at `-<digits>.`)."""
    match = re.search(r"-\d+\.\d", jar_file)
    return jar_file[: match.start()] if match else jar_file.removesuffix(".jar")


def pyspark_jar_names() -> set[str]:
    """Artifact names of the jars bundled inside the installed pyspark."""
    import pyspark

    jars_dir = Path(pyspark.__file__).parent / "jars"
    return {artifact_name(p.name) for p in jars_dir.glob("*.jar")}


def hadoop_version(jar_names: list[str]) -> str:
    """The Hadoop release of pyspark's `hadoop-client-api-<v>.jar`: hadoop-aws must be the
    same release, since it calls Hadoop internals that change between releases."""
    for name in jar_names:
        if artifact_name(name) == "hadoop-client-api":
            return name.removesuffix(".jar").removeprefix("hadoop-client-api-")
    raise LookupError("pyspark ships no hadoop-client-api jar")


def pyspark_hadoop_version() -> str:
    import pyspark

    jars_dir = Path(pyspark.__file__).parent / "jars"
    return hadoop_version(sorted(p.name for p in jars_dir.glob("*.jar")))


def s3a_jars() -> list[Path]:
    """hadoop-aws for pyspark's Hadoop and its runtime dependencies: the AWS SDK v2 bundle
    (which has STS, so web identity credentials work), the analytics accelerator and
    wildfly-openssl; minus what pyspark already bundles."""
    hadoop = pyspark_hadoop_version()
    resolved = maven.resolve(f"hadoop-aws-{hadoop}", [f"org.apache.hadoop:hadoop-aws:{hadoop}"])
    bundled = pyspark_jar_names()
    return [jar for jar in resolved if artifact_name(jar.name) not in bundled]


def spark_jars() -> list[Path]:
    """The Kafka connector for this pyspark and the dependencies pyspark lacks.

    Jars pyspark already bundles (slf4j, lz4, snappy, zstd, ...) are left out so the
    classpath holds one version of each.
    """
    # The connector is the same release as pyspark (pyproject pins one that Maven has).
    connector = pyspark_version()
    resolved = maven.resolve(
        f"spark-kafka-{SCALA_VERSION}-{connector}",
        [f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_VERSION}:{connector}"],
    )
    bundled = pyspark_jar_names()
    return [jar for jar in resolved if artifact_name(jar.name) not in bundled]
