"""Spark in local mode wired to the Kafka connector that matches the installed pyspark.

`spark_jars()` resolves `spark-sql-kafka-0-10` (plus the dependency jars pyspark does not
already ship) into the cache; `build_session` starts a local[2] SparkSession that loads them.
"""

from __future__ import annotations

import os
import re
import sys
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from quantcore.devservices import maven
from quantcore.devservices.ports import LOOPBACK

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SCALA_VERSION = "2.13"

# Small and quiet: two cores are shared by everything on a dev machine or CI runner.
DEFAULT_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.driver.memory": "1g",
    "spark.driver.host": LOOPBACK,
    "spark.driver.bindAddress": LOOPBACK,
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.streaming.forceDeleteTempCheckpointLocation": "true",
}


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


def session_conf(app_name: str, jars: list[str], conf: dict[str, str]) -> dict[str, str]:
    """The full configuration build_session applies: defaults, then the jars, then `conf`."""
    settings = {**DEFAULT_CONF, "spark.app.name": app_name, "spark.master": "local[2]"}
    if jars:
        settings["spark.jars"] = ",".join(str(j) for j in jars)
    settings.update({key: str(value) for key, value in conf.items()})
    return settings


def build_session(app_name: str, jars: list[str], **conf: str) -> SparkSession:
    """A local[2] SparkSession that loads `jars` (for example the `spark_jars` fixture).

    Extra settings go in `conf` with Spark's own keys: `build_session("x", jars,
    **{"spark.sql.shuffle.partitions": "4"})`. Spark keeps one session per process, so
    jars and JVM settings only take effect on the first call; later calls reuse it.
    """
    from pyspark.sql import SparkSession

    # Python workers (foreach writers, UDFs) must run in this interpreter, whose packages
    # (redis, quantcore) they import; pyspark otherwise starts `python3` from PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # Spark otherwise binds its block manager to the first non-loopback address it finds.
    os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
    builder = SparkSession.builder
    for key, value in session_conf(app_name, jars, conf).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
