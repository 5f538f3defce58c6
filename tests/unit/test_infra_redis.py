"""ElastiCache's users are the pipeline's ACL users: the access strings in infra/redis.tf are
quantcore.redisacl's, and the replication group takes only RBAC users over TLS."""

from __future__ import annotations

import re
from pathlib import Path

from quantcore import redisacl

REDIS_TF = (Path(__file__).resolve().parents[2] / "infra" / "redis.tf").read_text()


def _block(kind: str, name: str) -> str:
    start = REDIS_TF.index(f'resource "{kind}" "{name}" {{')
    end = REDIS_TF.index("\n}\n", start)
    return REDIS_TF[start:end]


def test_the_access_strings_are_the_acl_modules() -> None:
    found = dict(re.findall(r'^\s+(relay|serve)\s+=\s+"([^"]+)"$', REDIS_TF, re.M))
    assert found == {user: redisacl.access_string(user) for user in redisacl.PIPELINE_USERS}


def test_the_default_user_is_off_and_every_user_is_in_the_group() -> None:
    default = _block("aws_elasticache_user", "default")
    assert 'user_name     = "default"' in default
    assert re.search(r'access_string = "off[ "]', default)
    group = _block("aws_elasticache_user_group", "redis")
    assert "aws_elasticache_user.default[0].user_id" in group
    assert "aws_elasticache_user.pipeline" in group


def test_the_replication_group_requires_tls_and_rbac_users() -> None:
    group = _block("aws_elasticache_replication_group", "redis")
    assert "transit_encryption_enabled = true" in group
    assert 'transit_encryption_mode    = "required"' in group
    assert "user_group_ids" in group
    assert "auth_token" not in group  # RBAC users, not the one shared legacy token
    assert "checkov:skip" not in group
