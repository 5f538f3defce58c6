"""The Kafka ACLs follow the code: the topics each user may touch are the ones its code names
(quantcore.events.Topics through the shard's producer, the stream job's sources and sink, the
relay, the operator's AdminClient calls), the groups are the ones its consumers join, and no
user may do what another's code does."""

from __future__ import annotations

import ast
import inspect
from typing import Any

import pytest

from quantcore import kafkaacl
from quantcore.events import Topics
from quantcore.feed.producer import producer_config
from quantcore.kafkaacl import (
    CLUSTER,
    CLUSTER_RESOURCE,
    FEED,
    GROUP,
    OPERATOR,
    STREAM,
    TOPIC,
    acls,
    allows,
)
from quantcore.kafkaauth import KafkaAuth
from quantcore.operator import topics as operator_topics
from quantcore.stream import job
from quantcore.stream.relay import RelayConfig, consumer_conf

FEEDS = [Topics(), Topics.with_prefix("acme"), Topics("r", "b", "t", "q", "f")]


class _Reader:
    """Spark's DataStreamReader chain, recording each option (a unit-test stand-in)."""

    def __init__(self) -> None:
        self.recorded: dict[str, Any] = {}

    def format(self, source: str) -> _Reader:
        return self

    def option(self, key: str, value: Any) -> _Reader:
        self.recorded[key] = value
        return self

    def options(self, **options: Any) -> _Reader:
        self.recorded.update(options)
        return self

    def load(self) -> _Reader:
        return self


class _Spark:
    def __init__(self) -> None:
        self.readStream = _Reader()


def _config(topics: Topics) -> job.StreamConfig:
    return job.StreamConfig(
        kafka="k:9092",
        redis_url="rediss://r:6379/0",
        checkpoint="/tmp/c",
        book_topic=topics.book,
        trades_topic=topics.trades,
        flow_topic=topics.flow,
        raw_topic=topics.raw,
        kafka_auth=KafkaAuth.scram("stream", "pw", None),
    )


def _job_source_topics() -> set[str]:
    """The StreamConfig fields `job.start` subscribes its Kafka sources to."""
    fields = set()
    for node in ast.walk(ast.parse(inspect.getsource(job.start))):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "_source":
            fields.add(ast.unparse(node.args[2]).removeprefix("config."))
    return fields


@pytest.mark.parametrize("topics", FEEDS, ids=lambda t: t.book)
def test_the_feed_user_may_write_exactly_what_a_shard_produces(topics: Topics) -> None:
    rules = acls(topics)
    for topic in topics.all():
        shard_writes = topic in topics.by_kind().values()
        assert allows(rules, FEED, TOPIC, topic, "WRITE") is shard_writes, topic
        assert not allows(rules, FEED, TOPIC, topic, "READ")
        assert not allows(rules, FEED, TOPIC, topic, "CREATE")
    # The shard's producer is idempotent: the broker checks IDEMPOTENT_WRITE on the cluster.
    assert producer_config("k:9092")["enable.idempotence"] is True
    assert allows(rules, FEED, CLUSTER_RESOURCE, CLUSTER, "IDEMPOTENT_WRITE")


@pytest.mark.parametrize("topics", FEEDS, ids=lambda t: t.book)
def test_the_stream_user_reads_the_jobs_sources_and_writes_only_its_sink(topics: Topics) -> None:
    rules = acls(topics)
    config = _config(topics)
    # raw: the lake's archive of it (the job reads it only with a lake).
    assert _job_source_topics() == {"book_topic", "trades_topic", "flow_topic", "raw_topic"}
    read = {getattr(config, field) for field in _job_source_topics()}
    assert read == set(kafkaacl.stream_inputs(topics))
    for topic in read:
        assert allows(rules, STREAM, TOPIC, topic, "READ"), topic
        assert not allows(rules, STREAM, TOPIC, topic, "WRITE"), topic
    # The sink writes the output topic, which the relay then reads.
    assert config.output_topic == topics.signals
    assert allows(rules, STREAM, TOPIC, topics.signals, "WRITE")
    assert allows(rules, STREAM, TOPIC, topics.signals, "READ")
    assert not allows(rules, STREAM, TOPIC, topics.raw, "WRITE")
    assert not allows(rules, STREAM, TOPIC, topics.quarantine, "READ")


@pytest.mark.parametrize("topics", FEEDS, ids=lambda t: t.book)
def test_the_stream_user_may_join_the_groups_its_consumers_use(topics: Topics) -> None:
    rules = acls(topics)
    # Spark's source: the job's groupIdPrefix, which Spark extends with an id (and -executor).
    spark = _Spark()
    job._source(spark, _config(topics), topics.book)  # type: ignore[arg-type]
    options = spark.readStream.recorded
    prefix = options["groupIdPrefix"]
    assert options["kafka.security.protocol"] == "SASL_SSL"
    assert "kafka.sasl.jaas.config" in options
    for spark_group in (f"{prefix}-1f0e-3", f"{prefix}-1f0e-3-executor"):
        assert allows(rules, STREAM, GROUP, spark_group, "READ"), spark_group
    # The relay's consumer group.
    relay = consumer_conf(RelayConfig("k:9092", "rediss://r/0", topics.signals))
    assert allows(rules, STREAM, GROUP, str(relay["group.id"]), "READ")
    # Another feed's groups are not its to join.
    other = Topics.with_prefix("someone-else")
    assert not allows(rules, STREAM, GROUP, kafkaacl.relay_group(other.signals), "READ")
    assert not allows(rules, STREAM, GROUP, kafkaacl.stream_group_prefix(other.book), "READ")


# confluent-kafka AdminClient method -> the operation Kafka checks on the topic.
_ADMIN_OPERATIONS = {
    "list_topics": "DESCRIBE",
    "create_topics": "CREATE",
    "create_partitions": "ALTER",
    "incremental_alter_configs": "ALTER_CONFIGS",
    "delete_topics": "DELETE",
}


def _operator_admin_calls() -> set[str]:
    calls = set()
    for node in ast.walk(ast.parse(inspect.getsource(operator_topics))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        receiver = ast.unparse(node.func.value)
        if receiver == "admin" or receiver.startswith("_admin("):
            calls.add(node.func.attr)
    return calls


@pytest.mark.parametrize("topics", FEEDS, ids=lambda t: t.book)
def test_the_operator_may_do_what_its_admin_client_does_on_the_feeds_topics(
    topics: Topics,
) -> None:
    rules = acls(topics)
    calls = _operator_admin_calls()
    assert calls == set(_ADMIN_OPERATIONS), calls
    for topic in topics.all():
        for call in calls:
            assert allows(rules, OPERATOR, TOPIC, topic, _ADMIN_OPERATIONS[call]), (topic, call)
        assert not allows(rules, OPERATOR, TOPIC, topic, "WRITE")
        assert not allows(rules, OPERATOR, TOPIC, topic, "READ")


def test_the_operator_acl_is_the_feeds_dotted_prefix_and_nothing_wider() -> None:
    rules = kafkaacl.operator_acls(Topics.with_prefix("acme"))
    assert {(r.name, r.pattern) for r in rules} == {("acme.", kafkaacl.PREFIXED)}
    assert not allows(rules, OPERATOR, TOPIC, "acme2.book", "CREATE")
    # Topics without a shared dotted prefix get one literal rule each.
    loose = kafkaacl.operator_acls(Topics("r", "b", "t", "q", "f"))
    assert {r.name for r in loose} == {"r", "b", "t", "q", "f", "b.signals"}
    assert {r.pattern for r in loose} == {kafkaacl.LITERAL}


def test_no_pipeline_user_is_a_super_user_and_admin_has_no_acl() -> None:
    rules = acls(Topics())
    assert {r.user for r in rules} == set(kafkaacl.PIPELINE_USERS)
    assert kafkaacl.super_users(("User:CN=kafka,O=QuantCore",)) == (
        "User:admin;User:CN=kafka,O=QuantCore"
    )
    assert rules == sorted(set(rules)), "rendered once each, in a stable order"


def test_kafka_acls_commands_group_each_resources_operations_with_kafkas_own_names() -> None:
    rules = [
        kafkaacl.Acl(OPERATOR, TOPIC, "acme.", kafkaacl.PREFIXED, "CREATE"),
        kafkaacl.Acl(OPERATOR, TOPIC, "acme.", kafkaacl.PREFIXED, "DESCRIBE_CONFIGS"),
        kafkaacl.Acl(FEED, CLUSTER_RESOURCE, CLUSTER, kafkaacl.LITERAL, "IDEMPOTENT_WRITE"),
    ]
    assert kafkaacl.kafka_acls_arguments(rules) == [
        ["--add", "--allow-principal", "User:operator", "--operation", "Create",
         "--operation", "DescribeConfigs", "--topic", "acme.", "--resource-pattern-type", "prefixed"],
        ["--add", "--allow-principal", "User:feed", "--operation", "IdempotentWrite",
         "--cluster", "--resource-pattern-type", "literal"],
    ]  # fmt: skip
    every = acls(Topics.with_prefix("acme"))
    assert sum(c.count("--operation") for c in kafkaacl.kafka_acls_arguments(every)) == len(every)
