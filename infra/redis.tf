# Redis, chosen by var.redis_mode: "in-cluster" lets the operator run its StatefulSet;
# "elasticache" creates a Multi-AZ replication group, encrypted at rest and in transit.

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

resource "aws_elasticache_replication_group" "redis" {
  # checkov:skip=CKV_AWS_31:No AUTH token: the serving and Spark pods would need it as a secret the MarketFeed cannot reference yet; TLS is on and the security group admits only the EKS cluster.
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
  snapshot_retention_limit   = 1 # signals are rebuilt from Kafka; one day is plenty
  auto_minor_version_upgrade = true
}
