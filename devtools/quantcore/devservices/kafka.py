"""A single-node KRaft Kafka broker run straight from the Apache Kafka jars (no tarball).

`KafkaBroker(workdir).start()` formats a fresh log dir, starts `kafka.Kafka` with
`java -cp` on two free loopback ports (client and controller) and returns the bootstrap
address once an AdminClient gets metadata back.

Secure by default, as a cluster's brokers: the client listener is SASL_SSL with SCRAM-SHA-512
(a certificate for 127.0.0.1 from a CA made for this broker, quantcore.devservices.tlscerts),
the controller listener TLS with client certificates (only the broker's own), and the
StandardAuthorizer denies what no ACL allows. The SCRAM users (quantcore.kafkaacl: feed,
stream, operator, and the super user admin) are written into the metadata when the storage is
formatted, so there is never a moment without authentication; `grant(topics)` adds one feed's
ACLs. `auth(user)` is what a client is given. `insecure=True` is the PLAINTEXT broker of old.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantcore import kafkaacl
from quantcore.devservices import maven, tlscerts
from quantcore.devservices.ports import LOOPBACK, free_port, is_listening
from quantcore.devservices.process import ManagedService, ServiceError, without_stack_frames
from quantcore.events import Topics
from quantcore.kafkaauth import SCRAM_SHA_512, KafkaAuth

# Every user a test or benchmark may need; `quantcore up` creates the pipeline's and admin.
ALL_USERS = (*kafkaacl.PIPELINE_USERS, kafkaacl.ADMIN)
# The broker's certificate subject: its identity on the controller listener (a super user).
BROKER_COMMON_NAME = "kafka"
BROKER_PRINCIPAL = f"User:CN={BROKER_COMMON_NAME},O=QuantCore"
CLIENT_LISTENER = "CLIENT"

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
    "kafka-acls": "org.apache.kafka.tools.AclCommand",
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


@dataclass(frozen=True)
class KafkaSecurity:
    """The TLS files and the SCRAM users' passwords of one secured broker."""

    tls: tlscerts.ServerTls
    keystore: Path  # the broker's key and certificate in one PEM file (Kafka's PEM keystore)
    passwords: dict[str, str] = field(repr=False)

    def auth(self, user: str) -> KafkaAuth:
        if user not in self.passwords:
            raise KeyError(f"this broker has no user {user!r}; it has {sorted(self.passwords)}")
        return KafkaAuth.scram(user, self.passwords[user], str(self.tls.ca))


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def create_security(directory: Path, users: Sequence[str], names: Sequence[str]) -> KafkaSecurity:
    """A CA and a certificate for `names` (also a client certificate: the broker proves
    itself to its controller with it), and a fresh password per user, each kept in
    `directory/passwords/<user>` (mode 0600) for whoever runs the machine."""
    if kafkaacl.ADMIN not in users:
        raise ServiceError("a secured broker needs its super user, admin")
    tls = tlscerts.issue(directory / "tls", names, common_name=BROKER_COMMON_NAME, client=True)
    keystore = directory / "tls" / "keystore.pem"
    _write_private(keystore, tls.key.read_text() + tls.cert.read_text())
    passwords: dict[str, str] = {}
    for user in users:
        passwords[user] = secrets.token_urlsafe(32)
        _write_private(directory / "passwords" / user, passwords[user] + "\n")
    return KafkaSecurity(tls, keystore, passwords)


def load_security(directory: Path) -> KafkaSecurity | None:
    """The security `create_security` wrote into `directory`, None if it wrote none: a broker
    that keeps its storage (or a cluster's, its users) needs the same passwords again."""
    tls = tlscerts.paths(directory / "tls")
    passwords_dir = directory / "passwords"
    if not (tls.ca.exists() and passwords_dir.is_dir()):
        return None
    passwords = {p.name: p.read_text().strip() for p in sorted(passwords_dir.iterdir())}
    return KafkaSecurity(tls, directory / "tls" / "keystore.pem", passwords)


def stored_auth(directory: Path, user: str) -> KafkaAuth:
    """`user`'s credentials as a broker secured in `directory` keeps them (`quantcore up
    --dir D`: D/kafka/security), for tooling that attaches to a broker it did not start."""
    password = (directory / "passwords" / user).read_text().strip()
    return KafkaAuth.scram(user, password, str(tlscerts.paths(directory / "tls").ca))


def write_client_properties(path: Path, auth: KafkaAuth) -> Path:
    """A Java client config file (mode 0600: it holds the password) for Kafka's own tools:
    `kafka-topics --command-config`, `kafka-console-producer --producer.config`, ..."""
    text = "".join(f"{key}={value}\n" for key, value in auth.java_client_config().items())
    _write_private(path, text)
    return path


def _jaas(user: str, password: str) -> str:
    auth = KafkaAuth.scram(user, password, None)
    return auth.java_client_config()["sasl.jaas.config"]


def secure_properties(
    client_listeners: Iterable[str], keystore: Path, ca: Path, admin_password: str
) -> dict[str, str]:
    """What turns `server_properties` into a secured broker: each of `client_listeners`
    SASL_SSL with SCRAM-SHA-512 (the broker itself talks to the first one as admin), the
    controller listener TLS demanding a client certificate (only the broker holds one from
    this CA), every TLS file PEM, and ACLs enforced with admin and the broker as the only
    super users."""
    listeners = list(client_listeners)
    props = {
        "listener.security.protocol.map": ",".join(
            [*(f"{name}:SASL_SSL" for name in listeners), "CONTROLLER:SSL"]
        ),
        "inter.broker.listener.name": listeners[0],
        "sasl.enabled.mechanisms": SCRAM_SHA_512,
        "sasl.mechanism.inter.broker.protocol": SCRAM_SHA_512,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(ca),
        "listener.name.controller.ssl.client.auth": "required",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": kafkaacl.super_users((BROKER_PRINCIPAL,)),
    }
    for name in listeners:
        props[f"listener.name.{name.lower()}.scram-sha-512.sasl.jaas.config"] = _jaas(
            kafkaacl.ADMIN, admin_password
        )
    return props


def scram_arguments(passwords: dict[str, str]) -> list[str]:
    """`kafka-storage format` arguments that create each user's SCRAM-SHA-512 credential in
    the initial metadata. They go into an argument file (0600), never a command line."""
    arguments = []
    for user, password in sorted(passwords.items()):
        arguments += ["--add-scram", f"{SCRAM_SHA_512}=[name={user},password={password}]"]
    return arguments


_RESOURCE_TYPES = {kafkaacl.CLUSTER_RESOURCE: "BROKER"}


def acl_bindings(rules: Iterable[kafkaacl.Acl]) -> list[Any]:
    """confluent-kafka AclBindings (ALLOW from any host) for kafkaacl's rules."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    return [
        AclBinding(
            # librdkafka calls the cluster resource BROKER.
            ResourceType[_RESOURCE_TYPES.get(rule.resource_type, rule.resource_type)],
            rule.name,
            ResourcePatternType[rule.pattern],
            rule.principal,
            "*",
            AclOperation[rule.operation],
            AclPermissionType.ALLOW,
        )
        for rule in rules
    ]


def create_acls(bootstrap: str, admin: KafkaAuth, rules: Sequence[kafkaacl.Acl]) -> None:
    """Create `rules` as `admin` and wait until the broker enforces them (its metadata has
    them), so a client that starts next is already allowed."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    client = AdminClient({**admin.client_config(), "bootstrap.servers": bootstrap, "log_level": 4})
    bindings = acl_bindings(rules)
    for future in client.create_acls(bindings, request_timeout=30).values():
        future.result(timeout=30)
    any_name: Any = None  # a filter's None matches every name (the stubs say str)
    everything = AclBindingFilter(
        ResourceType.ANY,
        any_name,
        ResourcePatternType.ANY,
        any_name,
        any_name,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    wanted = set(bindings)
    deadline = time.monotonic() + 30
    while not wanted <= set(client.describe_acls(everything, request_timeout=10).result(10)):
        if time.monotonic() > deadline:
            raise ServiceError("Kafka did not list the ACLs it was given within 30 s")
        time.sleep(0.05)


# The broker in a container (images/Dockerfile.kafka): clients on every address, the
# controller on loopback only (one node is its own quorum), data on the pod's volume.
CONTAINER_PORT = 9092
CONTAINER_CONTROLLER_PORT = 9093
CONTAINER_LOG_DIR = Path("/var/lib/kafka/data")


# A secured container broker reads its TLS files and users' passwords from Secrets mounted
# here (images/kafka-entrypoint.sh adds the users to the storage it formats).
CONTAINER_TLS_DIR = Path("/etc/quantcore-kafka-tls")  # keystore.pem (key + cert), ca.crt
CONTAINER_USERS_DIR = Path("/etc/quantcore-kafka-users")  # one file per SCRAM user
# Plaintext on the pod's loopback only, never advertised: the readiness probe's ApiVersions
# (which needs no authentication), as no client outside the pod can reach it. Nobody on it
# has an ACL, so it can do nothing else.
CONTAINER_PROBE_PORT = 9095


def container_properties(
    advertised: str,
    extra_listeners: dict[str, tuple[int, str]] | None = None,
    *,
    admin_password: str | None = None,
) -> str:
    """server.properties of a broker in a container: the dev services' broker
    (`server_properties`), listening on every address, advertised as `advertised` (host:port
    clients reach it by). `extra_listeners` adds listeners: name -> (container port,
    advertised host:port). With `admin_password` (secure, the default of the test ground)
    every client listener is SASL_SSL as in `secure_properties`, with the TLS files from
    CONTAINER_TLS_DIR, and the probe listener is added; without it they are PLAINTEXT."""
    first = "CLIENT" if admin_password is not None else "PLAINTEXT"
    listeners = {first: (CONTAINER_PORT, advertised), **(extra_listeners or {})}
    bound = [f"{name}://0.0.0.0:{port}" for name, (port, _) in listeners.items()]
    props = {
        "advertised.listeners": ",".join(
            f"{name}://{address}" for name, (_, address) in listeners.items()
        ),
    }
    if admin_password is None:
        protocols = ["CONTROLLER:PLAINTEXT", *(f"{name}:PLAINTEXT" for name in listeners)]
        props["listener.security.protocol.map"] = ",".join(protocols)
    else:
        props |= secure_properties(
            list(listeners),
            CONTAINER_TLS_DIR / "keystore.pem",
            CONTAINER_TLS_DIR / "ca.crt",
            admin_password,
        )
        props["listener.security.protocol.map"] += ",PROBE:PLAINTEXT"
        bound.append(f"PROBE://{LOOPBACK}:{CONTAINER_PROBE_PORT}")
    props["listeners"] = ",".join([*bound, f"CONTROLLER://{LOOPBACK}:{CONTAINER_CONTROLLER_PORT}"])
    return server_properties(CONTAINER_LOG_DIR, CONTAINER_PORT, CONTAINER_CONTROLLER_PORT, props)


def new_cluster_id() -> str:
    """A KRaft cluster id: a UUID in URL-safe base64 without padding.

    Never starting with "-" (as Kafka's own ids): the storage tool would read it as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def broker_answers(bootstrap: str, auth: KafkaAuth | None = None) -> bool:
    """True when the broker returns cluster metadata to a real client (as `auth`'s user)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    host, _, port = bootstrap.rpartition(":")
    if not is_listening(int(port), host):
        return False  # not up yet; skip the client, whose retries would only fill the log
    # log_level 0: a probe that fails while the broker boots is expected, not an error.
    admin = AdminClient(
        {
            **(auth or KafkaAuth()).client_config(),
            "bootstrap.servers": bootstrap,
            "socket.timeout.ms": 2000,
            "log_level": 0,
        }
    )
    try:
        metadata = admin.list_topics(timeout=2)
    except KafkaException:
        return False
    return bool(metadata.brokers)


class KafkaBroker(ManagedService):
    """One KRaft broker living in `workdir` (config, data and log); stop() ends it. Its users,
    passwords and certificate are made on the first start and kept across restarts."""

    stop_timeout = 30.0

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        die_with_parent: bool = False,
        start_timeout: float = 120.0,
        extra_properties: dict[str, str] | None = None,
        insecure: bool = False,
        users: Sequence[str] = ALL_USERS,
        feeds: Sequence[Topics] = (Topics(),),
    ) -> None:
        super().__init__(
            workdir, "kafka.log", die_with_parent=die_with_parent, start_timeout=start_timeout
        )
        self.port = port or free_port()
        self.controller_port = free_port()
        self.extra_properties = extra_properties or {}
        self.insecure = insecure
        self.users = tuple(users)
        self.feeds = tuple(feeds)  # whose ACLs start() creates (grant() adds more)
        self.security: KafkaSecurity | None = None

    @property
    def marker(self) -> str:
        """Text the broker's command line always contains (to recognise it by pid later)."""
        return str(self.workdir / "server.properties")

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def auth(self, user: str) -> KafkaAuth:
        """`user`'s credentials and the CA (PLAINTEXT for an insecure broker)."""
        if self.insecure:
            return KafkaAuth()
        if self.security is None:
            raise ServiceError("Kafka was not started: it has no users yet")
        return self.security.auth(user)

    def client_config(self, user: str = kafkaacl.ADMIN) -> dict[str, Any]:
        """A confluent-kafka config reaching this broker as `user` (tests: admin by default)."""
        return {**self.auth(user).client_config(), "bootstrap.servers": self.bootstrap}

    def grant(self, topics: Topics) -> None:
        """Create the ACLs of one feed's users (quantcore.kafkaacl) for `topics`."""
        if self.insecure:
            return
        create_acls(self.bootstrap, self.auth(kafkaacl.ADMIN), kafkaacl.acls(topics))

    def _properties(self, data: Path) -> str:
        extra = {}
        if not self.insecure:
            assert self.security is not None
            extra = {
                "listeners": f"{CLIENT_LISTENER}://{LOOPBACK}:{self.port},"
                f"CONTROLLER://{LOOPBACK}:{self.controller_port}",
                "advertised.listeners": f"{CLIENT_LISTENER}://{LOOPBACK}:{self.port}",
                **secure_properties(
                    [CLIENT_LISTENER],
                    self.security.keystore,
                    self.security.tls.ca,
                    self.security.passwords[kafkaacl.ADMIN],
                ),
            }
        return server_properties(
            data, self.port, self.controller_port, {**extra, **self.extra_properties}
        )

    def start(self) -> str:
        """Format storage, start the broker, wait until it answers; returns the bootstrap."""
        jars = kafka_jars()
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        if not self.insecure and self.security is None:
            self.security = create_security(
                self.workdir / "security", self.users, [LOOPBACK, "localhost"]
            )
        config = self.workdir / "server.properties"
        # 0600: a secured broker's config holds its own (admin's) SCRAM password.
        _write_private(config, self._properties(data))
        broker_log4j = log4j_config(self.workdir, "INFO")
        self._format(jars, config)
        probe = None if self.insecure else self.auth(kafkaacl.ADMIN)
        self._launch(
            "kafka",
            [*java_command(jars, "kafka.Kafka", broker_log4j), str(config)],
            lambda: broker_answers(self.bootstrap, probe),
            "answering metadata",
        )
        for topics in self.feeds:
            self.grant(topics)
        return self.bootstrap

    def _format(self, jars: list[Path], config: Path) -> None:
        if (config.parent / "data" / "meta.properties").exists():
            return  # already formatted: a restart keeps its topics and users
        arguments = [
            "kafka.tools.StorageTool",
            "format",
            "--config",
            str(config),
            "--cluster-id",
            new_cluster_id(),
        ]
        if self.security is not None:
            arguments += scram_arguments(self.security.passwords)
        # The java launcher reads the main class and its arguments from this file: the
        # passwords never appear in a process listing.
        argfile = self.workdir / "format.args"
        _write_private(argfile, "".join(f'"{_argfile_quote(a)}"\n' for a in arguments))
        java = java_command(jars, "kafka.tools.StorageTool", log4j_config(self.workdir, "WARN"))
        try:
            done = subprocess.run(
                [*java[:-1], f"@{argfile}"], capture_output=True, text=True, check=False
            )
        finally:
            argfile.unlink()
        # The tool repeats its arguments when it refuses them: never let a password through.
        said = _PASSWORD.sub("password=***", done.stdout + done.stderr)
        with self.log.open("a") as log:
            log.write(said)
        if done.returncode != 0:
            output = "\n".join(without_stack_frames(said)[-30:])
            raise ServiceError(
                f"kafka storage format failed (exit {done.returncode}) for {config}:\n{output}"
            )


_PASSWORD = re.compile(r"password=[^\],\s]*")


def _argfile_quote(argument: str) -> str:
    # A java @argfile argument in double quotes: backslash escapes a quote and itself.
    return argument.replace("\\", "\\\\").replace('"', '\\"')


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
