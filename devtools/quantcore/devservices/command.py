"""`quantcore services up|down|status|jars`: the dev services as long-lived local processes.

`up` starts Kafka and Redis detached, writes `<dir>/services.env` and pid files, and puts
Kafka's own CLI tools in `<dir>/bin`; `down` stops exactly the processes `up` started.
`<dir>` is quantcore's own (`quantcore.ownership`): `up` empties it first and refuses one
that holds anything quantcore did not put there.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from quantcore import ownership

ENV_FILE = "services.env"


@dataclass(frozen=True)
class PidFile:
    """`<dir>/<name>.pid`: the pid and the config path that identifies the process."""

    path: Path

    def write(self, pid: int, marker: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{pid}\n{marker}\n")

    def read(self) -> tuple[int, str] | None:
        try:
            pid, marker = self.path.read_text().split("\n")[:2]
        except (FileNotFoundError, ValueError):
            return None
        return int(pid), marker


def env_file_text(values: dict[str, str]) -> str:
    """KEY=value lines, readable by `set -a; . file` and by docker/systemd env files."""
    return "".join(f"{key}={value}\n" for key, value in values.items())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status", "jars"])
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(".dev/services"),
        help="state directory, quantcore's own (default .dev/services)",
    )


def run(args: argparse.Namespace) -> int:
    state: Path = args.dir.resolve()
    if args.action == "jars":
        return jars()
    if args.action == "up":
        return up(state)
    if args.action == "down":
        return down(state)
    return status(state)


def pid_files(state: Path) -> dict[str, PidFile]:
    return {name: PidFile(state / f"{name}.pid") for name in ("kafka", "redis")}


def running(state: Path) -> dict[str, int]:
    """Services whose pid file points at a live process of ours."""
    from quantcore.devservices.process import command_line

    alive: dict[str, int] = {}
    if not ownership.is_ours(state):
        return alive  # pid files in a directory quantcore did not create are not ours
    for name, pid_file in pid_files(state).items():
        entry = pid_file.read()
        if entry and entry[1] in command_line(entry[0]):
            alive[name] = entry[0]
    return alive


def jars() -> int:
    """Resolve the Kafka, Spark and S3A jars into the cache (what `make test` needs first)."""
    from quantcore.devservices.kafka import kafka_jars
    from quantcore.devservices.spark import (
        connector_version,
        pyspark_hadoop_version,
        pyspark_version,
        s3a_jars,
        spark_jars,
    )

    kafka = kafka_jars()
    spark = spark_jars()
    s3a = s3a_jars()
    print(f"kafka: {len(kafka)} jars in {kafka[0].parent}")
    print(
        f"spark: pyspark {pyspark_version()}, connector {connector_version(spark)}, "
        f"{len(spark)} jars in {spark[0].parent}"
    )
    print(f"s3a: hadoop-aws {pyspark_hadoop_version()}, {len(s3a)} jars in {s3a[0].parent}")
    return 0


def up(state: Path) -> int:
    from quantcore.devservices.kafka import (
        KafkaBroker,
        write_client_properties,
        write_tool_wrappers,
    )
    from quantcore.devservices.process import ServiceError
    from quantcore.devservices.redis import RedisServer
    from quantcore.devservices.spark import spark_jars
    from quantcore.redisacl import ADMIN

    alive = running(state)
    if alive:
        print(f"services already running ({', '.join(alive)}); see {state / ENV_FILE}")
        return 0
    try:
        # Emptied so every `up` starts from an empty broker and database.
        ownership.fresh(state, "--dir (make: SERVICES_DIR=)")
    except ownership.NotOurs as refused:
        print(refused, file=sys.stderr)
        return 2
    spark = spark_jars()
    tools = write_tool_wrappers(state / "bin")
    kafka = KafkaBroker(state / "kafka")
    redis = RedisServer(state / "redis")
    pids = pid_files(state)
    try:
        bootstrap = kafka.start()
        pids["kafka"].write(kafka.pid, kafka.marker)
        redis.start()
        pids["redis"].write(redis.pid, redis.marker)
    except ServiceError as error:
        kafka.stop()
        redis.stop()
        for pid_file in pids.values():
            pid_file.path.unlink(missing_ok=True)
        print(error, file=sys.stderr)
        return 1
    kafka_admin = kafka.auth(ADMIN)  # Kafka's super user has Redis's admin's name too
    tool_config = write_client_properties(state / "kafka" / "admin.properties", kafka_admin)
    values = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        # SASL_SSL and SCRAM users, the same way: admin's password stays in its 0600 files.
        "KAFKA_CA_FILE": kafka_admin.ca_file or "",
        "KAFKA_USERNAME": ADMIN,
        "KAFKA_PASSWORD_FILE": str(kafka.workdir / "security" / "passwords" / ADMIN),
        "KAFKA_CLIENT_CONFIG": str(tool_config),
        # TLS and ACL users: the address, and admin's credentials by reference (the
        # password stays in its 0600 file; this file and its printout never hold it).
        "REDIS_URL": redis.address,
        "REDIS_CA_FILE": redis.auth(ADMIN).ca_file or "",
        "REDIS_USERNAME": ADMIN,
        "REDIS_PASSWORD_FILE": str(redis.workdir / "passwords" / ADMIN),
        "SPARK_JARS": ",".join(str(j) for j in spark),
        "KAFKA_BIN": str(state / "bin"),
        "KAFKA_LOG": str(kafka.log),
        "REDIS_LOG": str(redis.log),
    }
    (state / ENV_FILE).write_text(env_file_text(values))
    print(env_file_text(values), end="")
    print(f"kafka tools: {', '.join(t.name for t in tools)} in {state / 'bin'}")
    return 0


def down(state: Path) -> int:
    from quantcore.devservices.process import stop_pid

    if not ownership.is_ours(state):
        print(f"no services of quantcore's in {state}")
        return 0
    for name, pid_file in pid_files(state).items():
        entry = pid_file.read()
        if entry is None:
            continue
        stopped = stop_pid(*entry, timeout=30)
        print(f"{name}: {'stopped' if stopped else 'was not running'} (pid {entry[0]})")
        pid_file.path.unlink(missing_ok=True)
    (state / ENV_FILE).unlink(missing_ok=True)
    return 0


def status(state: Path) -> int:
    alive = running(state)
    for name in pid_files(state):
        print(f"{name}: {'running, pid ' + str(alive[name]) if name in alive else 'stopped'}")
    return 0 if alive else 3
