"""A single-node KRaft Kafka broker run straight from the Apache Kafka jars (no tarball).

`KafkaBroker(workdir).start()` formats a fresh log dir, starts `kafka.Kafka` with
`java -cp` on two free loopback ports (client and controller) and returns the bootstrap
address once an AdminClient gets metadata back.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from pathlib import Path

from quantcore.devservices import maven
from quantcore.devservices.ports import LOOPBACK, free_port, is_listening
from quantcore.devservices.process import ManagedService, ServiceError, without_stack_frames

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"
HEAP = "-Xmx512m"

# Main classes of Kafka's own command-line tools, as its bin/*.sh scripts run them.
TOOLS: dict[str, str] = {
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-configs": "org.apache.kafka.admin.ConfigCommand",
    "kafka-storage": "kafka.tools.StorageTool",
    "kafka-metadata-quorum": "org.apache.kafka.tools.MetadataQuorumCommand",
}

# Plain console logging at INFO for the broker (its log file is the tail we show on
# failure) and WARN for the command-line tools, like the distribution's own configs.
_LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = out
"""


def kafka_jars() -> list[Path]:
    """Broker, tools and logging jars for KAFKA_VERSION, resolved once into the cache."""
    return maven.resolve(
        f"kafka-{SCALA_VERSION}-{KAFKA_VERSION}",
        [
            f"org.apache.kafka:kafka_{SCALA_VERSION}:{KAFKA_VERSION}",
            f"org.apache.kafka:kafka-tools:{KAFKA_VERSION}",
            # Kafka logs through slf4j 1.x; this binding sends it to log4j2.
            f"org.apache.logging.log4j:log4j-slf4j-impl:{LOG4J_VERSION}",
        ],
    )


def classpath(jars: list[Path]) -> str:
    return ":".join(str(j) for j in jars)


def log4j_properties(level: str) -> str:
    """The log4j2 configuration: plain console lines at `level`."""
    return _LOG4J2.format(level=level)


def log4j_config(directory: Path, level: str) -> Path:
    """Write (once) the log4j2 config for `level` and return its path."""
    path = directory / f"log4j2-{level.lower()}.properties"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(log4j_properties(level))
    return path


def java_command(jars: list[Path], main_class: str, log_config: Path) -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise ServiceError("java is not installed (make setup-services installs it)")
    return [
        java,
        HEAP,
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log_config}",
        "-cp",
        classpath(jars),
        main_class,
    ]


def server_properties(
    log_dir: Path, port: int, controller_port: int, extra: dict[str, str] | None = None
) -> str:
    """A one-node broker+controller: every internal topic has replication factor 1."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{LOOPBACK}:{controller_port}",
        "listeners": f"PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Tests create consumer groups constantly; the default 3 s delay only slows them.
        "group.initial.rebalance.delay.ms": "0",
        # One machine of two cores: Kafka's defaults (3 network, 8 request threads) are sized
        # for a server and only add context switches here.
        "num.network.threads": "1",
        "num.io.threads": "2",
        "auto.create.topics.enable": "true",
    }
    props.update(extra or {})
    return "".join(f"{key}={value}\n" for key, value in props.items())


# The broker in a container (images/Dockerfile.kafka): clients on every address, the
# controller on loopback only (one node is its own quorum), data on the pod's volume.
CONTAINER_PORT = 9092
CONTAINER_CONTROLLER_PORT = 9093
CONTAINER_LOG_DIR = Path("/var/lib/kafka/data")


def container_properties(
    advertised: str, extra_listeners: dict[str, tuple[int, str]] | None = None
) -> str:
    """server.properties of a broker in a container: the dev services' broker
    (`server_properties`), listening on every address, advertised as `advertised` (host:port
    clients reach it by). `extra_listeners` adds PLAINTEXT listeners: name -> (container
    port, advertised host:port)."""
    listeners = {"PLAINTEXT": (CONTAINER_PORT, advertised), **(extra_listeners or {})}
    protocols = ["CONTROLLER:PLAINTEXT", *(f"{name}:PLAINTEXT" for name in listeners)]
    return server_properties(
        CONTAINER_LOG_DIR,
        CONTAINER_PORT,
        CONTAINER_CONTROLLER_PORT,
        {
            "listeners": ",".join(
                [f"{name}://0.0.0.0:{port}" for name, (port, _) in listeners.items()]
                + [f"CONTROLLER://{LOOPBACK}:{CONTAINER_CONTROLLER_PORT}"]
            ),
            "advertised.listeners": ",".join(
                f"{name}://{address}" for name, (_, address) in listeners.items()
            ),
            "listener.security.protocol.map": ",".join(protocols),
        },
    )


def new_cluster_id() -> str:
    """A KRaft cluster id: a UUID in URL-safe base64 without padding.

    Never starting with "-" (as Kafka's own ids): the storage tool would read it as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def broker_answers(bootstrap: str) -> bool:
    """True when the broker returns cluster metadata to a real client."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    host, _, port = bootstrap.rpartition(":")
    if not is_listening(int(port), host):
        return False  # not up yet; skip the client, whose retries would only fill the log
    # log_level 0: a probe that fails while the broker boots is expected, not an error.
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=2)
    except KafkaException:
        return False
    return bool(metadata.brokers)


class KafkaBroker(ManagedService):
    """One KRaft broker living in `workdir` (config, data and log); stop() ends it."""

    stop_timeout = 30.0

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        die_with_parent: bool = False,
        start_timeout: float = 120.0,
        extra_properties: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            workdir, "kafka.log", die_with_parent=die_with_parent, start_timeout=start_timeout
        )
        self.port = port or free_port()
        self.controller_port = free_port()
        self.extra_properties = extra_properties or {}

    @property
    def marker(self) -> str:
        """Text the broker's command line always contains (to recognise it by pid later)."""
        return str(self.workdir / "server.properties")

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> str:
        """Format storage, start the broker, wait until it answers; returns the bootstrap."""
        jars = kafka_jars()
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "server.properties"
        config.write_text(
            server_properties(data, self.port, self.controller_port, self.extra_properties)
        )
        broker_log4j = log4j_config(self.workdir, "INFO")
        self._format(jars, config)
        self._launch(
            "kafka",
            [*java_command(jars, "kafka.Kafka", broker_log4j), str(config)],
            lambda: broker_answers(self.bootstrap),
            "answering metadata",
        )
        return self.bootstrap

    def _format(self, jars: list[Path], config: Path) -> None:
        if (config.parent / "data" / "meta.properties").exists():
            return  # already formatted: a restart keeps its topics
        command = [
            *java_command(jars, "kafka.tools.StorageTool", log4j_config(self.workdir, "WARN")),
            "format",
            "--config",
            str(config),
            "--cluster-id",
            new_cluster_id(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        with self.log.open("a") as log:
            log.write(done.stdout + done.stderr)
        if done.returncode != 0:
            output = "\n".join(without_stack_frames(done.stdout + done.stderr)[-30:])
            raise ServiceError(
                f"kafka storage format failed (exit {done.returncode}) for {config}:\n{output}"
            )


def tool_wrapper(name: str, jars: list[Path], log_config: Path) -> str:
    """A shell script that runs one of Kafka's command-line tools from the cached jars."""
    command = " ".join(java_command(jars, TOOLS[name], log_config))
    return f'#!/bin/sh\n# {name} from Apache Kafka {KAFKA_VERSION} jars.\nexec {command} "$@"\n'


def write_tool_wrappers(bin_dir: Path) -> list[Path]:
    """Write kafka-topics, kafka-console-producer, ... into `bin_dir`; returns their paths."""
    jars = kafka_jars()
    bin_dir.mkdir(parents=True, exist_ok=True)
    log_config = log4j_config(bin_dir.parent / "kafka-tools", "WARN")
    paths = []
    for name in TOOLS:
        path = bin_dir / name
        path.write_text(tool_wrapper(name, jars, log_config))
        path.chmod(0o755)
        paths.append(path)
    return paths
