"""How a process proves who it is to Kafka: security protocol, SASL user and password, and the
CA of the brokers' TLS certificates, mapped to every client the project runs.

Written once for every client: the feed's producer, the stream job's relay (confluent-kafka)
and its Spark Kafka source and sink (the Java client, `kafka.`-prefixed options), the
operator's AdminClient, local mode and the test harness. The bootstrap address stays an
argument (`--kafka HOST:PORT`); the credentials travel beside it, in the environment, so no
command line, pod spec argument or log line carries a password:

    QUANTCORE_KAFKA_SECURITY_PROTOCOL  SASL_SSL (default when a user is set) or PLAINTEXT
    QUANTCORE_KAFKA_SASL_MECHANISM     SCRAM-SHA-512 (default) or SCRAM-SHA-256
    QUANTCORE_KAFKA_USERNAME           the SCRAM user (quantcore.kafkaacl: feed, stream, operator)
    QUANTCORE_KAFKA_PASSWORD           its password (in a cluster: env from a Secret)
    QUANTCORE_KAFKA_CA_FILE            PEM file of the CA that signed the brokers' certificates
                                       (absent: the system's CAs, as for MSK)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_ENV = "QUANTCORE_KAFKA_SECURITY_PROTOCOL"
MECHANISM_ENV = "QUANTCORE_KAFKA_SASL_MECHANISM"
USERNAME_ENV = "QUANTCORE_KAFKA_USERNAME"
PASSWORD_ENV = "QUANTCORE_KAFKA_PASSWORD"
CA_FILE_ENV = "QUANTCORE_KAFKA_CA_FILE"

PLAINTEXT = "PLAINTEXT"
SASL_SSL = "SASL_SSL"
PROTOCOLS = (PLAINTEXT, SASL_SSL)
SCRAM_SHA_512 = "SCRAM-SHA-512"
MECHANISMS = (SCRAM_SHA_512, "SCRAM-SHA-256")


def _jaas_quote(value: str) -> str:
    # A JAAS option value is a double-quoted string; backslash escapes quotes and itself.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class KafkaAuth:
    """Credentials and trust for one Kafka client. The default (nothing set) is PLAINTEXT
    without a user: the explicit insecure mode of one trusted machine."""

    protocol: str = PLAINTEXT
    mechanism: str = SCRAM_SHA_512
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"Kafka security protocol {self.protocol!r}: one of {PROTOCOLS}")
        if self.mechanism not in MECHANISMS:
            raise ValueError(f"Kafka SASL mechanism {self.mechanism!r}: one of {MECHANISMS}")
        if self.protocol == SASL_SSL and not (self.username and self.password):
            raise ValueError(
                f"Kafka over {SASL_SSL} needs a user and a password"
                f" (${USERNAME_ENV}, ${PASSWORD_ENV})"
            )

    @property
    def secure(self) -> bool:
        return self.protocol == SASL_SSL

    @classmethod
    def scram(cls, username: str, password: str, ca_file: str | None) -> KafkaAuth:
        return cls(SASL_SSL, SCRAM_SHA_512, username, password, ca_file)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaAuth:
        env = os.environ if environ is None else environ
        username = env.get(USERNAME_ENV) or None
        protocol = env.get(PROTOCOL_ENV) or (SASL_SSL if username else PLAINTEXT)
        return cls(
            protocol=protocol.upper(),
            mechanism=(env.get(MECHANISM_ENV) or SCRAM_SHA_512).upper(),
            username=username,
            password=env.get(PASSWORD_ENV) or None,
            ca_file=env.get(CA_FILE_ENV) or None,
        )

    def client_config(self) -> dict[str, Any]:
        """confluent-kafka (librdkafka) settings, to merge into a producer's, consumer's or
        AdminClient's config. The broker's name is checked against its certificate."""
        if not self.secure:
            return {"security.protocol": PLAINTEXT.lower()}
        config: dict[str, Any] = {
            "security.protocol": SASL_SSL.lower(),
            "sasl.mechanism": self.mechanism,
            "sasl.username": self.username,
            "sasl.password": self.password,
            "ssl.endpoint.identification.algorithm": "https",
        }
        if self.ca_file:
            config["ssl.ca.location"] = self.ca_file
        return config

    def java_client_config(self) -> dict[str, str]:
        """The same for Kafka's Java client (Spark's source and sink, Kafka's own tools). The
        CA is a PEM truststore, which the Java client reads without a keystore conversion."""
        if not self.secure or self.username is None or self.password is None:
            return {"security.protocol": PLAINTEXT}  # (a secure one always has both)
        config = {
            "security.protocol": SASL_SSL,
            "sasl.mechanism": self.mechanism,
            "sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required"
                f" username={_jaas_quote(self.username)}"
                f" password={_jaas_quote(self.password)};"
            ),
            "ssl.endpoint.identification.algorithm": "https",
        }
        if self.ca_file:
            config["ssl.truststore.type"] = "PEM"
            config["ssl.truststore.location"] = self.ca_file
        return config

    def spark_options(self) -> dict[str, str]:
        """Options of Spark's Kafka source and sink (`kafka.` + the Java client's setting)."""
        return {f"kafka.{key}": value for key, value in self.java_client_config().items()}

    def env(self) -> dict[str, str]:
        """The environment that hands these credentials to a child process."""
        pairs = {
            PROTOCOL_ENV: self.protocol,
            MECHANISM_ENV: self.mechanism if self.secure else None,
            USERNAME_ENV: self.username,
            PASSWORD_ENV: self.password,
            CA_FILE_ENV: self.ca_file,
        }
        return {key: value for key, value in pairs.items() if value}

    def describe(self) -> str:
        """What to log: the protocol and the user, never the password."""
        if not self.secure:
            return PLAINTEXT
        return f"{self.protocol} {self.mechanism} as {self.username}"
