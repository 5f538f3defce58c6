"""images/spark-entrypoint.sh turns Spark-on-Kubernetes' driver/executor contract into commands.

The script runs here with SPARK_HOME and JAVA_HOME pointing at stand-in programs that print
the arguments they receive (the real ones run in tests/integration/test_images.py).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ENTRYPOINT = Path(__file__).resolve().parents[2] / "images" / "spark-entrypoint.sh"


@pytest.fixture
def homes(tmp_path: Path) -> dict[str, str]:
    printer = '#!/bin/sh\nfor a in "$@"; do printf \'%s\\n\' "$a"; done\n'
    for program in ("spark/bin/spark-submit", "java/bin/java"):
        path = tmp_path / program
        path.parent.mkdir(parents=True)
        path.write_text(printer)
        path.chmod(0o755)
    return {"SPARK_HOME": str(tmp_path / "spark"), "JAVA_HOME": str(tmp_path / "java")}


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *args],
        env={"PATH": os.environ["PATH"], **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_driver_runs_spark_submit_in_client_mode_on_the_pod_address(
    homes: dict[str, str], tmp_path: Path
) -> None:
    env = {**homes, "SPARK_DRIVER_BIND_ADDRESS": "10.1.2.3"}
    args = ["driver", "--properties-file", "/opt/spark/conf/spark.properties", "app.py", "x y"]
    done = run(args, env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "--deploy-mode",
        "client",
        "--conf",
        "spark.driver.bindAddress=10.1.2.3",
        "--conf",
        "spark.executorEnv.SPARK_DRIVER_POD_IP=10.1.2.3",
        "--properties-file",
        "/opt/spark/conf/spark.properties",
        "app.py",
        "x y",
    ]


def test_driver_without_its_address_is_refused(homes: dict[str, str], tmp_path: Path) -> None:
    done = run(["driver", "app.py"], homes, tmp_path)
    assert done.returncode == 64
    assert "SPARK_DRIVER_BIND_ADDRESS" in done.stderr


EXECUTOR_ENV = {
    "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@driver-svc:7078",
    "SPARK_EXECUTOR_ID": "1",
    "SPARK_EXECUTOR_CORES": "2",
    "SPARK_EXECUTOR_MEMORY": "512m",
    "SPARK_APPLICATION_ID": "spark-abc",
    "SPARK_EXECUTOR_POD_IP": "10.1.2.4",
    "SPARK_EXECUTOR_POD_NAME": "job-exec-1",
    "SPARK_RESOURCE_PROFILE_ID": "0",
    "SPARK_CONF_DIR": "/opt/spark/conf",
    "SPARK_CLASSPATH": "/extra/lib.jar",
}


def test_executor_runs_the_kubernetes_backend_from_the_environment(
    homes: dict[str, str], tmp_path: Path
) -> None:
    opts = {f"SPARK_JAVA_OPT_{i}": f"-Dopt.{i}=v {i}" for i in range(12)}
    done = run(["executor"], {**homes, **EXECUTOR_ENV, **opts}, tmp_path)
    assert done.returncode == 0, done.stderr
    argv = done.stdout.splitlines()
    # Numeric order of SPARK_JAVA_OPT_<n>, values kept whole (spaces included).
    assert argv[:12] == [f"-Dopt.{i}=v {i}" for i in range(12)]
    assert argv[12:14] == ["-Xms512m", "-Xmx512m"]
    assert argv[14] == "-cp"
    assert argv[15] == f"/opt/spark/conf:{homes['SPARK_HOME']}/jars/*:/extra/lib.jar:{tmp_path}"
    assert argv[16:] == [
        "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend",
        "--driver-url",
        "spark://CoarseGrainedScheduler@driver-svc:7078",
        "--executor-id",
        "1",
        "--cores",
        "2",
        "--app-id",
        "spark-abc",
        "--hostname",
        "10.1.2.4",
        "--resourceProfileId",
        "0",
        "--podName",
        "job-exec-1",
    ]


@pytest.mark.parametrize("missing", ["SPARK_DRIVER_URL", "SPARK_EXECUTOR_POD_IP"])
def test_executor_names_a_missing_variable(
    homes: dict[str, str], tmp_path: Path, missing: str
) -> None:
    env = {k: v for k, v in EXECUTOR_ENV.items() if k != missing}
    done = run(["executor"], {**homes, **env}, tmp_path)
    assert done.returncode == 64
    assert missing in done.stderr


def test_other_commands_run_as_given(homes: dict[str, str], tmp_path: Path) -> None:
    done = run(["echo", "spark", "image"], homes, tmp_path)
    assert done.returncode == 0
    assert done.stdout == "spark image\n"


def test_no_command_is_a_usage_error(homes: dict[str, str], tmp_path: Path) -> None:
    done = run([], homes, tmp_path)
    assert done.returncode == 64
    assert "usage" in done.stderr
