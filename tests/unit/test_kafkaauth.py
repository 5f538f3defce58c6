"""Kafka security settings -> confluent-kafka configs, Java client configs and Spark options."""

from __future__ import annotations

import pytest

from quantcore import kafkaauth
from quantcore.kafkaauth import KafkaAuth

ENV = {
    kafkaauth.USERNAME_ENV: "feed",
    kafkaauth.PASSWORD_ENV: 'p"w\\d',
    kafkaauth.CA_FILE_ENV: "/etc/kafka-ca/ca.crt",
}


def test_nothing_set_is_plaintext_without_a_user() -> None:
    auth = KafkaAuth.from_env({})
    assert not auth.secure
    assert auth.client_config() == {"security.protocol": "plaintext"}
    assert auth.spark_options() == {"kafka.security.protocol": "PLAINTEXT"}
    assert auth.env() == {kafkaauth.PROTOCOL_ENV: "PLAINTEXT"}


def test_a_user_means_sasl_ssl_with_scram_sha_512() -> None:
    auth = KafkaAuth.from_env(ENV)
    assert auth == KafkaAuth.scram("feed", 'p"w\\d', "/etc/kafka-ca/ca.crt")
    assert auth.client_config() == {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "feed",
        "sasl.password": 'p"w\\d',
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": "/etc/kafka-ca/ca.crt",
    }


def test_spark_options_carry_a_jaas_config_and_a_pem_truststore() -> None:
    options = KafkaAuth.from_env(ENV).spark_options()
    assert options == {
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "SCRAM-SHA-512",
        # The password's quote and backslash are escaped inside the JAAS string.
        "kafka.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule"
        ' required username="feed" password="p\\"w\\\\d";',
        "kafka.ssl.endpoint.identification.algorithm": "https",
        "kafka.ssl.truststore.type": "PEM",
        "kafka.ssl.truststore.location": "/etc/kafka-ca/ca.crt",
    }


def test_without_a_ca_the_systems_trust_store_is_used() -> None:
    auth = KafkaAuth.scram("stream", "secret", None)
    assert "ssl.ca.location" not in auth.client_config()
    assert not any("truststore" in key for key in auth.spark_options())


def test_the_environment_round_trips_and_the_password_is_never_shown() -> None:
    auth = KafkaAuth.from_env(ENV)
    assert KafkaAuth.from_env(auth.env()) == auth
    assert 'p"w' not in repr(auth)
    assert 'p"w' not in auth.describe()
    assert auth.describe() == "SASL_SSL SCRAM-SHA-512 as feed"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({kafkaauth.USERNAME_ENV: "feed"}, "needs a user and a password"),
        ({kafkaauth.PROTOCOL_ENV: "SASL_SSL"}, "needs a user and a password"),
        ({kafkaauth.PROTOCOL_ENV: "SSL"}, "security protocol"),
        ({**ENV, kafkaauth.MECHANISM_ENV: "PLAIN"}, "SASL mechanism"),
    ],
)
def test_incomplete_or_unknown_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KafkaAuth.from_env(env)


def test_an_explicit_plaintext_protocol_sends_no_credentials() -> None:
    # PLAINTEXT with a user set is PLAINTEXT: the credentials are not sent anywhere.
    auth = KafkaAuth.from_env({**ENV, kafkaauth.PROTOCOL_ENV: "plaintext"})
    assert auth.client_config() == {"security.protocol": "plaintext"}
