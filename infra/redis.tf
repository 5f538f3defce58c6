# Redis, chosen by var.redis_mode: "in-cluster" lets the operator run its StatefulSet;
# "elasticache" creates a Multi-AZ replication group, encrypted at rest and in transit, whose
# clients authenticate as ElastiCache RBAC users: relay (the stream job's writes) and serve
# (reads), with the access strings quantcore.redisacl renders (a unit test holds them equal),
# and the group's mandatory "default" user switched off.

locals {
  # quantcore.redisacl.access_string(user), verbatim (tests/unit/test_infra_redis.py).
  redis_access_strings = {
    relay = "on resetkeys resetchannels -@all +evalsha +script|load +sadd +hget +hset +publish +exists +set +ping ~qc:signal:* ~qc:symbols ~qc:stream:malformed ~qc:stream:relay:* &qc:updates:*"
    serve = "on resetkeys resetchannels -@all +smembers +hmget +psubscribe +punsubscribe +ping %R~qc:signal:* %R~qc:symbols &qc:updates:*"
  }
}

resource "aws_security_group" "redis" {
  count       = var.redis_mode == "elasticache" ? 1 : 0
  name        = "${var.name}-redis"
  description = "ElastiCache Redis: 6379 from the EKS cluster only"
  vpc_id      = aws_vpc.this.id
}

resource "aws_vpc_security_group_ingress_rule" "redis" {
  count                        = var.redis_mode == "elasticache" ? 1 : 0
  security_group_id            = aws_security_group.redis[0].id
  description                  = "Redis from the EKS cluster"
  referenced_security_group_id = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
}

resource "aws_elasticache_subnet_group" "redis" {
  count      = var.redis_mode == "elasticache" ? 1 : 0
  name       = "${var.name}-redis"
  subnet_ids = aws_subnet.private[*].id
}

# Every user group must hold a user named "default": this one can do nothing.
resource "aws_elasticache_user" "default" {
  count         = var.redis_mode == "elasticache" ? 1 : 0
  user_id       = "${var.name}-default"
  user_name     = "default"
  engine        = "REDIS"
  access_string = "off resetkeys resetchannels -@all"
  authentication_mode {
    type      = "password"
    passwords = [var.redis_passwords.disabled_default]
  }
}

resource "aws_elasticache_user" "pipeline" {
  for_each      = var.redis_mode == "elasticache" ? local.redis_access_strings : {}
  user_id       = "${var.name}-${each.key}"
  user_name     = each.key
  engine        = "REDIS"
  access_string = each.value
  authentication_mode {
    type      = "password"
    passwords = [var.redis_passwords[each.key]]
  }
}

resource "aws_elasticache_user_group" "redis" {
  count         = var.redis_mode == "elasticache" ? 1 : 0
  user_group_id = var.name
  engine        = "REDIS"
  user_ids      = concat([aws_elasticache_user.default[0].user_id], [for u in aws_elasticache_user.pipeline : u.user_id])
}

resource "aws_elasticache_replication_group" "redis" {
  count                      = var.redis_mode == "elasticache" ? 1 : 0
  replication_group_id       = var.name
  description                = "${var.name}: latest signals and their pub/sub fan-out"
  engine                     = "redis"
  engine_version             = "7.1"
  node_type                  = var.elasticache_node_type
  num_cache_clusters         = 2 # a primary and a replica in another zone
  automatic_failover_enabled = true
  multi_az_enabled           = true
  port                       = 6379
  subnet_group_name          = aws_elasticache_subnet_group.redis[0].name
  security_group_ids         = [aws_security_group.redis[0].id]
  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.platform.arn
  transit_encryption_enabled = true
  transit_encryption_mode    = "required"
  user_group_ids             = [aws_elasticache_user_group.redis[0].id]
  snapshot_retention_limit   = 1 # signals are rebuilt from Kafka; one day is plenty
  auto_minor_version_upgrade = true

  lifecycle {
    precondition {
      condition     = var.redis_passwords != null
      error_message = "redis_mode \"elasticache\" needs redis_passwords (relay, serve, disabled_default)."
    }
  }
}
