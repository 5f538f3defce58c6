"""The stream job's SparkSession: local mode (small, quiet, on loopback) unless a launcher gave
a master, loading given jars.

Two ways in:
- `quantcore stream` or a test runs plain Python: pyspark starts its own JVM, no master was
  given, so the session is local[N] and binds to loopback;
- spark-submit runs the job (on Kubernetes the driver pod's entry point does, with
  spark.master=k8s://..., the pod's bind address and the SparkApplication's sparkConf): the
  JVM's configuration is the launcher's, and nothing here overrides what it set.

Used by `quantcore stream`, and by the tests and benchmarks that run Spark themselves.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

LOOPBACK = "127.0.0.1"
LOCAL_MASTER = "local[2]"

# Small and quiet: two cores are shared by everything on a dev machine or CI runner.
DEFAULT_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.driver.memory": "1g",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.streaming.forceDeleteTempCheckpointLocation": "true",
}
# Local mode only: the driver and its block manager on loopback (Spark otherwise binds to the
# first non-loopback address it finds). A pod's driver must bind to the pod's address instead.
LOCAL_ONLY_CONF: dict[str, str] = {
    "spark.driver.host": LOOPBACK,
    "spark.driver.bindAddress": LOOPBACK,
}


def launched(launcher: Mapping[str, str]) -> bool:
    """True when a launcher (spark-submit) already chose the master: then the session is the
    launcher's, not a local one."""
    return bool(launcher.get("spark.master"))


def session_conf(
    app_name: str,
    jars: list[str],
    conf: Mapping[str, str],
    launcher: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The settings build_session applies over the JVM's own configuration (`launcher`, what
    spark-submit set; empty when pyspark starts its own JVM).

    Without a launcher's master: defaults, local master and loopback, the jars, then `conf`.
    With one: defaults, the jars and `conf`, minus every key the launcher set: its master,
    bind address and sparkConf win (Spark would otherwise let these settings replace them).
    """
    launcher = launcher or {}
    settings = {**DEFAULT_CONF, "spark.app.name": app_name}
    if not launched(launcher):
        settings.update(LOCAL_ONLY_CONF)
        settings["spark.master"] = LOCAL_MASTER
    if jars:
        settings["spark.jars"] = ",".join(str(j) for j in jars)
    settings.update({key: str(value) for key, value in conf.items()})
    if launched(launcher):
        settings = {key: value for key, value in settings.items() if key not in launcher}
    return settings


def launcher_conf() -> dict[str, str]:
    """What spark-submit configured, when it started this Python (it hands pyspark its JVM
    through PYSPARK_GATEWAY_PORT); empty otherwise, without starting a JVM."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return {}
    from pyspark import SparkConf, SparkContext

    # Connect to spark-submit's JVM first: before that a SparkConf is an empty Python dict.
    SparkContext._ensure_initialized()
    # loadDefaults: the JVM's spark.* system properties, which spark-submit set.
    return dict(SparkConf(loadDefaults=True).getAll())


def build_session(app_name: str, jars: list[str], **conf: str) -> SparkSession:
    """A SparkSession that loads `jars` (for example the `spark_jars` fixture): local[2] on
    loopback, or the launcher's master when spark-submit started this process.

    Extra settings go in `conf` with Spark's own keys: `build_session("x", jars,
    **{"spark.sql.shuffle.partitions": "4"})`. Spark keeps one session per process, so
    jars and JVM settings only take effect on the first call; later calls reuse it.
    """
    from pyspark.sql import SparkSession

    launcher = launcher_conf()
    # Python workers (foreach writers, UDFs) must run in this interpreter, whose packages
    # (redis, quantcore) they import; pyspark otherwise starts `python3` from PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if not launched(launcher):
        # Spark otherwise binds its block manager to the first non-loopback address it finds.
        os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
    builder = SparkSession.builder
    for key, value in session_conf(app_name, jars, conf, launcher).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
