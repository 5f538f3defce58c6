"""Local mode's one security setting: secure by default, `--insecure` the explicit opt-out.

Secure, `quantcore up` serves gRPC over TLS with a bearer token (certificates and token in
DIR/tls), starts Redis with TLS only and the pipeline's ACL users (quantcore.redisacl), and
Kafka with SASL_SSL only, SCRAM users and ACLs (quantcore.kafkaacl), with certificates and
passwords generated under `--dir`, handing each process only its own users' credentials.
`--insecure` is for one trusted machine alone: plaintext gRPC without tokens, plain Redis
without passwords, PLAINTEXT Kafka without users. Every part of local mode that can be secured reads this
one object, so a single flag governs them all.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class Security:
    insecure: bool = False

    @property
    def redis_tls_and_acl(self) -> bool:
        return not self.insecure

    @property
    def kafka_sasl_ssl(self) -> bool:
        return not self.insecure

    def describe(self) -> str:
        return "INSECURE (--insecure: no TLS, no passwords)" if self.insecure else "secure"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Security:
        return cls(insecure=bool(getattr(args, "insecure", False)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="turn security off for this one machine: gRPC in plaintext without tokens, Redis"
        " without TLS or passwords, Kafka PLAINTEXT without users (default: gRPC over TLS with a"
        " bearer token from DIR/tls, reused while valid; Redis TLS-only and Kafka SASL_SSL-only"
        " with a user per process and ACLs, credentials under --dir)",
    )
