"""Pure parts of quantcore.devservices: generated configs, poms, jar names, log excerpts."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from quantcore.devservices.command import PidFile, env_file_text
from quantcore.devservices.kafka import TOOLS, new_cluster_id, server_properties, tool_wrapper
from quantcore.devservices.maven import Artifact, pom_for
from quantcore.devservices.process import first_errors, log_tail, without_stack_frames
from quantcore.devservices.redis import redis_config
from quantcore.devservices.spark import artifact_name
from quantcore.stream.session import session_conf


def parse_properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_server_properties_describe_one_loopback_kraft_node(tmp_path: Path) -> None:
    props = parse_properties(server_properties(tmp_path, 9092, 9093, {"num.partitions": "3"}))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["log.dirs"] == str(tmp_path)
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["num.partitions"] == "3"  # extras override defaults


def test_cluster_id_is_22_url_safe_characters_never_starting_with_a_dash() -> None:
    # One id in 64 would start with "-" by chance; 2,000 draws make missing that unlikely.
    ids = {new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 22 and "=" not in i and "+" not in i for i in ids)
    assert not any(i.startswith("-") for i in ids)


def test_artifact_coordinates_parse_and_reject_bad_input() -> None:
    assert Artifact.parse("org.apache.kafka:kafka_2.13:4.1.1") == Artifact(
        "org.apache.kafka", "kafka_2.13", "4.1.1"
    )
    for bad in ["org.apache.kafka:kafka_2.13", "a::1", "a:b:c:d"]:
        with pytest.raises(ValueError, match="group:artifact:version"):
            Artifact.parse(bad)


def test_pom_declares_every_artifact() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    pom = ET.fromstring(pom_for("k", [Artifact("g", "a", "1"), Artifact("h", "b", "2")]))
    deps = [
        tuple(d.find(f"m:{f}", ns).text for f in ("groupId", "artifactId", "version"))  # type: ignore[union-attr]
        for d in pom.iterfind("m:dependencies/m:dependency", ns)
    ]
    assert deps == [("g", "a", "1"), ("h", "b", "2")]


@pytest.mark.parametrize(
    ("jar", "name"),
    [
        ("kafka-clients-3.9.2.jar", "kafka-clients"),
        ("zstd-jni-1.5.6-10.jar", "zstd-jni"),
        ("spark-sql-kafka-0-10_2.13-4.2.0.jar", "spark-sql-kafka-0-10_2.13"),
        ("commons-pool2-2.13.1.jar", "commons-pool2"),
    ],
)
def test_artifact_name_strips_the_version(jar: str, name: str) -> None:
    assert artifact_name(jar) == name


def test_session_conf_layers_defaults_jars_and_overrides() -> None:
    conf = session_conf("app", ["/a.jar", "/b.jar"], {"spark.sql.shuffle.partitions": "8"})
    assert conf["spark.master"] == "local[2]"
    assert conf["spark.jars"] == "/a.jar,/b.jar"
    assert conf["spark.ui.enabled"] == "false"
    assert conf["spark.sql.shuffle.partitions"] == "8"


def test_redis_config_is_loopback_without_persistence(tmp_path: Path) -> None:
    lines = dict(line.split(" ", 1) for line in redis_config(6390, tmp_path).splitlines())
    assert lines["bind"] == "127.0.0.1"
    assert lines["port"] == "6390"
    assert lines["save"] == '""'
    assert lines["appendonly"] == "no"


def test_tool_wrapper_runs_the_tool_main_class_with_arguments(tmp_path: Path) -> None:
    script = tool_wrapper("kafka-topics", [tmp_path / "a.jar"], tmp_path / "log4j2.properties")
    assert script.startswith("#!/bin/sh\n")
    assert TOOLS["kafka-topics"] in script
    assert script.rstrip().endswith('"$@"')


def test_log_excerpts_keep_the_cause_and_drop_stack_frames(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text(
        "[t] INFO starting\n[t] ERROR bind failed\njava.net.BindException: in use\n"
        "\tat a.b(C.java:1)\n\t... 3 more\n" + "[t] INFO shutting down\n" * 100
    )
    assert first_errors(log) == ["[t] ERROR bind failed", "java.net.BindException: in use"]
    assert "\tat a.b" not in "\n".join(without_stack_frames(log.read_text()))
    assert log_tail(log, 2) == "[t] INFO shutting down\n[t] INFO shutting down"
    assert "no log" in log_tail(tmp_path / "missing.log")


def test_env_file_and_pid_file_round_trip(tmp_path: Path) -> None:
    assert env_file_text({"A": "1", "B": "x,y"}) == "A=1\nB=x,y\n"
    pid_file = PidFile(tmp_path / "s" / "kafka.pid")
    assert pid_file.read() is None
    pid_file.write(1234, "/w/server.properties")
    assert pid_file.read() == (1234, "/w/server.properties")


def test_a_child_gets_its_own_redis_credentials_and_no_others() -> None:
    from quantcore import redisauth
    from quantcore.devservices.programs import child_env
    from quantcore.redisauth import RedisAuth

    inherited = {"PATH": "/bin", redisauth.PASSWORD_ENV: "someone-elses", "X": "1"}
    env = child_env(RedisAuth("serve", "pw", "/ca.crt"), inherited)
    assert env == {
        "PATH": "/bin",
        "X": "1",
        redisauth.USERNAME_ENV: "serve",
        redisauth.PASSWORD_ENV: "pw",
        redisauth.CA_FILE_ENV: "/ca.crt",
    }
    assert redisauth.PASSWORD_ENV not in child_env(None, inherited)


def test_a_secured_redis_config_serves_tls_only_with_its_aclfile(tmp_path: Path) -> None:
    from quantcore.devservices.redis import RedisSecurity
    from quantcore.devservices.tlscerts import paths

    security = RedisSecurity(paths(tmp_path / "tls"), {"serve": "pw"})
    text = redis_config(6390, tmp_path, security=security, aclfile=tmp_path / "users.acl")
    lines = dict(line.split(" ", 1) for line in text.splitlines())
    assert lines["port"] == "0"  # no plaintext listener at all
    assert lines["tls-port"] == "6390"
    assert lines["tls-cert-file"] == str(tmp_path / "tls" / "tls.crt")
    assert lines["tls-key-file"] == str(tmp_path / "tls" / "tls.key")
    assert lines["tls-ca-cert-file"] == str(tmp_path / "tls" / "ca.crt")
    assert lines["aclfile"] == str(tmp_path / "users.acl")
    assert "pw" not in text


def test_issued_certificates_name_the_server_and_chain_to_their_ca(tmp_path: Path) -> None:
    import ipaddress
    import stat

    from cryptography import x509

    from quantcore.devservices.tlscerts import issue

    tls = issue(tmp_path, ["127.0.0.1", "localhost"])
    ca = x509.load_pem_x509_certificate(tls.ca.read_bytes())
    cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert stat.S_IMODE(tls.key.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("ca.key")), "the CA's key is never written"
