"""The stream job's SparkSession in local mode: small, quiet, on loopback, loading given jars.

Used by `quantcore stream`, and by the tests and benchmarks that run Spark themselves.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

LOOPBACK = "127.0.0.1"

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
