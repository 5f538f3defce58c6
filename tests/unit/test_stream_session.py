"""The stream job's Spark settings: local defaults without a launcher, the launcher's own
settings kept under spark-submit (Kubernetes), checkpoint locations as URIs, S3A settings."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from quantcore.devservices.spark import hadoop_version
from quantcore.stream import command, job, s3a
from quantcore.stream.session import LOOPBACK, launched, session_conf

# What spark-submit in the driver pod leaves in the JVM's configuration (a few of its keys).
K8S_LAUNCHER = {
    "spark.master": "k8s://https://10.96.0.1:443",
    "spark.submit.deployMode": "client",
    "spark.driver.bindAddress": "10.214.0.7",
    "spark.driver.host": "feed-stream-driver-svc.quantcore.svc",
    "spark.sql.shuffle.partitions": "6",
    "spark.app.name": "feed-stream",
}


def test_without_a_launcher_the_session_is_local_on_loopback() -> None:
    conf = session_conf("app", [], job.session_conf(threads=8), launcher={})
    assert conf["spark.master"] == "local[8]"
    assert conf["spark.driver.host"] == LOOPBACK
    assert conf["spark.driver.bindAddress"] == LOOPBACK
    assert conf["spark.sql.shuffle.partitions"] == "2"
    assert not launched({})


def test_under_spark_submit_the_launchers_master_bind_address_and_conf_win() -> None:
    conf = session_conf("app", [], job.session_conf(threads=8), launcher=K8S_LAUNCHER)
    assert launched(K8S_LAUNCHER)
    # Nothing the launcher set is set again (Spark would let these replace it).
    assert not set(conf) & set(K8S_LAUNCHER)
    assert "spark.master" not in conf
    assert "spark.driver.host" not in conf
    assert "spark.driver.bindAddress" not in conf
    # What the job needs and the launcher left alone is still set.
    assert conf["spark.sql.streaming.stateStore.checkpointFormatVersion"] == "2"
    assert conf["spark.ui.showConsoleProgress"] == "false"


def test_jars_are_only_what_is_given() -> None:
    assert "spark.jars" not in session_conf("app", [], {}, launcher=K8S_LAUNCHER)
    assert session_conf("app", ["/a.jar"], {}, launcher={})["spark.jars"] == "/a.jar"
    assert not any("packages" in key for key in session_conf("app", ["/a.jar"], {}, {}))


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("s3a://bucket/quantcore/feed", "s3a://bucket/quantcore/feed/book"),
        ("s3a://bucket/quantcore/feed/", "s3a://bucket/quantcore/feed/book"),
        ("file:///tmp/quantcore/checkpoints", "file:///tmp/quantcore/checkpoints/book"),
        ("/tmp/run/checkpoint", "/tmp/run/checkpoint/book"),
        ("relative/dir", "relative/dir/book"),
    ],
)
def test_query_checkpoints_keep_the_uri(base: str, expected: str) -> None:
    config = job.StreamConfig(kafka="k:9092", redis_url="redis://r:6379/0", checkpoint=base)
    assert config.query_checkpoint("book") == expected


def test_an_empty_checkpoint_is_refused() -> None:
    with pytest.raises(ValueError, match="checkpoint"):
        job.StreamConfig(kafka="k:9092", redis_url="redis://r:6379/0", checkpoint=" ")


def test_the_command_line_keeps_an_s3a_checkpoint_intact() -> None:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(
        ["--kafka", "k:9092", "--redis", "redis://r/0", "--checkpoint", "s3a://bucket/x"]
    )
    assert args.checkpoint == "s3a://bucket/x"
    assert command._config(args).query_checkpoint("trade-flow") == "s3a://bucket/x/trade-flow"
    local = parser.parse_args(["--kafka", "k", "--redis", "r", "--checkpoint", str(Path("/t/c"))])
    assert command._config(local).query_checkpoint("book") == "/t/c/book"


def test_s3a_settings_join_only_for_an_s3a_checkpoint() -> None:
    assert not any("s3a" in key for key in job.session_conf(checkpoint="/tmp/c", environ={}))
    conf = job.session_conf(checkpoint="s3a://b/c", environ={})
    providers = conf["spark.hadoop.fs.s3a.aws.credentials.provider"].split(",")
    # The SDK's default chain: environment keys and web identity (IRSA) among others.
    assert providers[-1] == "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider"
    assert "spark.hadoop.fs.s3a.endpoint" not in conf
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "false"


def test_a_lake_on_s3_takes_the_same_s3a_settings_as_a_checkpoint() -> None:
    def s3a_settings(conf: dict[str, str]) -> dict[str, str]:
        return {key: value for key, value in conf.items() if ".s3a." in key}

    on_s3 = job.session_conf(checkpoint="/tmp/c", environ={}, lake="s3a://b/lake/feed")
    assert s3a_settings(on_s3)
    assert s3a_settings(on_s3) == s3a_settings(job.session_conf(checkpoint="s3a://b/c", environ={}))
    assert not any("s3a" in key for key in job.session_conf(checkpoint="/c", lake="/l"))


def test_the_lake_is_off_unless_named_and_gets_its_own_task_slot() -> None:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    base = ["--kafka", "k", "--redis", "r", "--checkpoint", "s3a://bucket/x"]
    assert command._config(parser.parse_args(base)).lake == ""
    config = command._config(
        parser.parse_args([*base, "--lake", "s3a://bucket/lake/feed", "--lake-retention", "7d"])
    )
    assert (config.lake, config.lake_retention) == ("s3a://bucket/lake/feed", "7d")
    # Each lake table's query checkpoints beside the others, under the job's checkpoint.
    assert config.query_checkpoint(job.lake_query("signals")) == "s3a://bucket/x/lake-signals"
    assert job.task_slots(2, lake=True) == job.task_slots(2) + 1


def test_a_custom_endpoint_comes_from_the_environment_with_path_style() -> None:
    conf = s3a.s3a_conf({"AWS_ENDPOINT_URL_S3": "http://10.213.0.2:9000", "AWS_REGION": "eu-1"})
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://10.213.0.2:9000"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "eu-1"
    generic = s3a.s3a_conf({"AWS_ENDPOINT_URL": "http://s3.local", "AWS_DEFAULT_REGION": "x"})
    assert generic["spark.hadoop.fs.s3a.endpoint"] == "http://s3.local"
    assert generic["spark.hadoop.fs.s3a.endpoint.region"] == "x"


@pytest.mark.parametrize(
    ("raw", "expected"), [("false", "false"), ("TRUE", "true"), ("0", "false")]
)
def test_path_style_can_be_forced(raw: str, expected: str) -> None:
    environ = {"AWS_ENDPOINT_URL_S3": "http://s3.local", "QUANTCORE_S3_PATH_STYLE": raw}
    assert s3a.s3a_conf(environ)["spark.hadoop.fs.s3a.path.style.access"] == expected


def test_a_bad_path_style_value_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="QUANTCORE_S3_PATH_STYLE"):
        s3a.s3a_conf({"QUANTCORE_S3_PATH_STYLE": "maybe"})


def test_sparkconf_given_to_spark_submit_wins_over_the_environment() -> None:
    derived = job.session_conf(
        checkpoint="s3a://b/c", environ={"AWS_ENDPOINT_URL_S3": "http://from-env:9000"}
    )
    launcher = {**K8S_LAUNCHER, "spark.hadoop.fs.s3a.endpoint": "http://from-sparkconf:9000"}
    conf = session_conf("app", [], derived, launcher=launcher)
    assert "spark.hadoop.fs.s3a.endpoint" not in conf  # the launcher's value stays
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"


def test_hadoop_version_comes_from_pysparks_client_jar() -> None:
    names = [
        "guava-33.6.0-jre.jar",
        "hadoop-client-api-3.5.0.jar",
        "hadoop-client-runtime-3.5.0.jar",
    ]
    assert hadoop_version(names) == "3.5.0"
    with pytest.raises(LookupError):
        hadoop_version(["guava-33.6.0-jre.jar"])


def test_the_test_s3_servers_environment_configures_the_job() -> None:
    from quantcore.devservices import s3

    conf = s3a.s3a_conf(s3.client_env("http://10.213.0.2:9000"))
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://10.213.0.2:9000"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == s3.REGION
    command = s3.moto_command("10.213.0.2", 9000, python="/venv/bin/python")
    assert command == [
        "/venv/bin/python",
        "-m",
        "quantcore.devservices.s3",
        "--host",
        "10.213.0.2",
        "--port",
        "9000",
    ]


def test_local_files_skip_hadoop_forks_and_s3a_keeps_its_defaults() -> None:
    manager = "spark.sql.streaming.checkpointFileManagerClass"
    local = job.session_conf(checkpoint="/tmp/c", environ={})
    assert local[manager].endswith(".FileSystemBasedCheckpointFileManager")
    assert local["spark.hadoop.fs.file.impl"] == "org.apache.hadoop.fs.RawLocalFileSystem"
    remote = job.session_conf(checkpoint="s3a://b/c", lake="s3a://b/lake", environ={})
    assert manager not in remote
    # S3A buffers through Hadoop's checksummed local file system (it casts to it): with S3A
    # anywhere, the default file system stays.
    assert "spark.hadoop.fs.file.impl" not in remote
    lake_only = job.session_conf(checkpoint="/tmp/c", lake="s3a://b/lake", environ={})
    assert "spark.hadoop.fs.file.impl" not in lake_only
    assert lake_only[manager].endswith(".FileSystemBasedCheckpointFileManager")


def test_a_job_runs_the_live_queries_the_lakes_or_both() -> None:
    both = job.StreamConfig("k:9092", "rediss://r:6379/0", "/c", lake="/lake")
    assert (both.runs_live, both.runs_lake) == (True, True)
    live = job.StreamConfig("k:9092", "rediss://r:6379/0", "/c", lake="/lake", only="live")
    assert (live.runs_live, live.runs_lake) == (True, False)
    lake = job.StreamConfig("k:9092", "rediss://r:6379/0", "/c", lake="/lake", only="lake")
    assert (lake.runs_live, lake.runs_lake) == (False, True)
    no_lake = job.StreamConfig("k:9092", "rediss://r:6379/0", "/c")
    assert (no_lake.runs_live, no_lake.runs_lake) == (True, False)
    with pytest.raises(ValueError, match="needs a lake"):
        job.StreamConfig("k:9092", "rediss://r:6379/0", "/c", only="lake")
    with pytest.raises(ValueError, match="live or lake"):
        job.StreamConfig("k:9092", "rediss://r:6379/0", "/c", only="both")
