"""Who may do what in Kafka: the SCRAM users of one feed and their ACLs, rendered from the
topic names (quantcore.events.Topics) and the consumer groups the code uses.

The broker denies whatever no ACL allows (`allow.everyone.if.no.acl.found=false`), so each
user may do exactly what its code does:

- `feed` (the feed shards' producer): WRITE and DESCRIBE the five topics a shard writes (raw,
  book, trades, quarantine, flow), IDEMPOTENT_WRITE on the cluster (the producer is idempotent);
- `stream` (the stream job: Spark's Kafka source and sink, and the relay): READ the topics the
  job reads (book, trades, flow, and raw, which the lake archives) and the signals topic (the
  relay), WRITE the signals topic, READ its consumer groups: the Spark source's (`stream_group_prefix`, a prefix: Spark adds a
  query id and `-executor`) and the relay's (`relay_group`);
- `operator` (the operator and `quantcore up`, quantcore.operator.topics): CREATE, DESCRIBE,
  ALTER, DELETE, DESCRIBE_CONFIGS and ALTER_CONFIGS on the feed's topics, by their shared
  prefix (`acme.` for acme.raw, acme.book, ...) when they have one.

`admin` is a super user of the broker (tooling and tests only; the broker's own identity);
nobody else has any right. The data here is plain: the dev services turn it into AdminClient
ACL bindings, Terraform or a broker operator into theirs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from quantcore.events import Topics

FEED = "feed"
STREAM = "stream"
OPERATOR = "operator"
ADMIN = "admin"
# The users the pipeline runs as; ADMIN is tooling only.
PIPELINE_USERS = (FEED, STREAM, OPERATOR)

CLUSTER = "kafka-cluster"  # the one cluster resource's name in Kafka's ACLs

# Resource types, pattern types and operations with Kafka's own names.
TOPIC, GROUP, CLUSTER_RESOURCE = "TOPIC", "GROUP", "CLUSTER"
LITERAL, PREFIXED = "LITERAL", "PREFIXED"


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW rule: `User:<user>` may `operation` on the resource, from any host."""

    user: str
    resource_type: str
    name: str
    pattern: str
    operation: str

    @property
    def principal(self) -> str:
        return f"User:{self.user}"


def relay_group(signals_topic: str) -> str:
    """The relay's consumer group: one per signals topic, its committed offsets are the
    relay's progress."""
    return f"quantcore-stream-relay.{signals_topic}"


def stream_group_prefix(book_topic: str) -> str:
    """The Spark Kafka source's `groupIdPrefix`: Spark appends a unique id (and `-executor`
    for the executors' consumers), so the ACL is a prefix."""
    return f"quantcore-stream.{book_topic}."


def topic_prefix(topics: Topics) -> str | None:
    """The dotted prefix every topic of the feed shares (`acme.`), or None."""
    first, *others = topics.all()
    parts = first.split(".")[:-1]  # whole dot-separated segments only
    while parts and not all(name.startswith(".".join(parts) + ".") for name in others):
        parts.pop()
    return ".".join(parts) + "." if parts else None


def _each(user: str, kind: str, names: list[str], pattern: str, ops: tuple[str, ...]) -> list[Acl]:
    return [Acl(user, kind, name, pattern, op) for name in names for op in ops]


def feed_acls(topics: Topics) -> list[Acl]:
    return [
        *_each(FEED, TOPIC, list(topics.by_kind().values()), LITERAL, ("WRITE", "DESCRIBE")),
        Acl(FEED, CLUSTER_RESOURCE, CLUSTER, LITERAL, "IDEMPOTENT_WRITE"),
    ]


# The topics the stream job reads (quantcore.stream.job: book and flow signals, trades counted).
def stream_inputs(topics: Topics) -> list[str]:
    # raw: read by the lake's archive of it (quantcore.stream.lakerows.raw_lines).
    return [topics.raw, topics.book, topics.trades, topics.flow]


def stream_acls(topics: Topics) -> list[Acl]:
    return [
        *_each(STREAM, TOPIC, stream_inputs(topics), LITERAL, ("READ", "DESCRIBE")),
        *_each(STREAM, TOPIC, [topics.signals], LITERAL, ("WRITE", "READ", "DESCRIBE")),
        Acl(STREAM, GROUP, stream_group_prefix(topics.book), PREFIXED, "READ"),
        Acl(STREAM, GROUP, relay_group(topics.signals), LITERAL, "READ"),
        # Spark's Kafka sink is a Java producer, idempotent by default.
        Acl(STREAM, CLUSTER_RESOURCE, CLUSTER, LITERAL, "IDEMPOTENT_WRITE"),
    ]


OPERATOR_OPERATIONS = ("CREATE", "DESCRIBE", "ALTER", "DELETE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS")


def operator_acls(topics: Topics) -> list[Acl]:
    prefix = topic_prefix(topics)
    if prefix is not None:
        return _each(OPERATOR, TOPIC, [prefix], PREFIXED, OPERATOR_OPERATIONS)
    return _each(OPERATOR, TOPIC, topics.all(), LITERAL, OPERATOR_OPERATIONS)


def acls(topics: Topics) -> list[Acl]:
    """Every ACL one feed's users need, sorted (so two renderings compare equal)."""
    return sorted({*feed_acls(topics), *stream_acls(topics), *operator_acls(topics)})


def allows(rules: list[Acl], user: str, resource_type: str, name: str, operation: str) -> bool:
    """Whether `rules` let `user` do `operation` on the resource `name`, matched as Kafka
    matches: a LITERAL rule names it exactly, a PREFIXED one starts it."""
    return any(
        rule.user == user
        and rule.resource_type == resource_type
        and rule.operation == operation
        and (rule.name == name if rule.pattern == LITERAL else name.startswith(rule.name))
        for rule in rules
    )


def super_users(broker_principals: tuple[str, ...] = ()) -> str:
    """The broker's `super.users`: the admin and the broker's own identities."""
    return ";".join([f"User:{ADMIN}", *broker_principals])


_TOOL_RESOURCE = {TOPIC: "--topic", GROUP: "--group", CLUSTER_RESOURCE: "--cluster"}


def kafka_acls_arguments(rules: Sequence[Acl]) -> list[list[str]]:
    """Kafka's `kafka-acls --add` arguments (the admin connection left out) for `rules`, one
    command per user and resource with all its operations."""
    grouped: dict[tuple[str, str, str, str], list[str]] = {}
    for rule in rules:
        key = (rule.principal, rule.resource_type, rule.name, rule.pattern)
        grouped.setdefault(key, []).append(rule.operation)
    commands = []
    for (principal, resource_type, name, pattern), operations in grouped.items():
        target = [_TOOL_RESOURCE[resource_type]]
        if resource_type != CLUSTER_RESOURCE:
            target.append(name)
        command = ["--add", "--allow-principal", principal]
        for operation in operations:
            command += ["--operation", "".join(w.capitalize() for w in operation.split("_"))]
        commands.append([*command, *target, "--resource-pattern-type", pattern.lower()])
    return commands


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m quantcore.kafkaacl",
        description="Print the kafka-acls commands that give one MarketFeed's users (feed,"
        " stream, operator) their ACLs, e.g. for MSK or any broker run by someone else.",
    )
    parser.add_argument("--topic-prefix", default=None, help="the feed's topic prefix (acme)")
    parser.add_argument("--bootstrap-server", default="BROKER:9096", help="as the admin reaches it")
    parser.add_argument(
        "--command-config", default="admin.properties", help="the admin's client settings"
    )
    args = parser.parse_args(argv)
    connection = ["--bootstrap-server", args.bootstrap_server]
    connection += ["--command-config", args.command_config]
    for command in kafka_acls_arguments(acls(Topics.with_prefix(args.topic_prefix))):
        print(shlex.join(["kafka-acls", *connection, *command]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
