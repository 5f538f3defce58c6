"""`quantcore up` is secure unless told `--insecure`, and one setting says so for every part."""

from __future__ import annotations

import argparse

from quantcore.localmode import command
from quantcore.localmode.security import Security


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_up_is_secure_by_default() -> None:
    security = Security.from_args(_parse())
    assert security == Security(insecure=False)
    assert security.redis_tls_and_acl
    assert security.kafka_sasl_ssl


def test_insecure_is_the_explicit_opt_out() -> None:
    security = Security.from_args(_parse("--insecure"))
    assert security.insecure
    assert not security.redis_tls_and_acl
    assert not security.kafka_sasl_ssl
    assert "INSECURE" in security.describe()
