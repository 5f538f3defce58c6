"""The stream job's session under spark-submit (as in a driver pod) keeps the master and bind
address spark-submit gave it; started as plain Python it is local on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

# Builds the session as `quantcore stream` does and prints what Spark ended up with.
SCRIPT = """\
import json
from quantcore.stream import job, session
spark = session.build_session("session-check", [], **job.session_conf(threads=1))
conf = spark.sparkContext.getConf()
keys = ("spark.master", "spark.driver.host", "spark.driver.bindAddress",
        "spark.sql.shuffle.partitions")
print("RESULT " + json.dumps({key: conf.get(key, "") for key in keys}))
spark.stop()
"""


def _result(output: str) -> dict[str, str]:
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert lines, output[-3000:]
    return dict(json.loads(lines[-1].removeprefix("RESULT ")))


def _env() -> dict[str, str]:
    # The session's Python workers and driver: this interpreter, which has quantcore.
    return {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}


@pytest.mark.timeout(300)
def test_under_spark_submit_the_launchers_settings_stay(tmp_path: Path) -> None:
    import pyspark

    script = tmp_path / "check.py"
    script.write_text(SCRIPT)
    spark_submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    command = [
        str(spark_submit),
        "--master", "local[3]",
        "--conf", "spark.driver.bindAddress=127.0.0.1",
        "--conf", "spark.driver.host=localhost",
        "--conf", "spark.sql.shuffle.partitions=7",
        "--conf", "spark.ui.enabled=false",
        str(script),
    ]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Not the job's local[1], loopback address or shuffle default: spark-submit's values.
    assert _result(done.stdout) == {
        "spark.master": "local[3]",
        "spark.driver.host": "localhost",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.sql.shuffle.partitions": "7",
    }


@pytest.mark.timeout(300)
def test_as_plain_python_the_session_is_local_on_loopback(tmp_path: Path) -> None:
    script = tmp_path / "check.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in _env().items() if not k.startswith("PYSPARK_GATEWAY")}
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert _result(done.stdout) == {
        "spark.master": "local[1]",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.sql.shuffle.partitions": "2",
    }
