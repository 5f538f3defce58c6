# Kafka, chosen by var.kafka_mode: "in-cluster" runs a Strimzi-managed KRaft cluster on the
# platform nodes (cheapest); "msk" runs Amazon MSK in the private subnets (managed, Multi-AZ).

locals {
  kafka_namespace = "kafka"
  kafka_cluster   = "quantcore"
  msk_brokers     = var.msk.brokers_per_az * length(local.azs)
}

# --- in-cluster: the Strimzi operator, then the cluster (a chart in this folder) -----------

resource "helm_release" "strimzi" {
  count            = var.kafka_mode == "in-cluster" ? 1 : 0
  name             = "strimzi"
  repository       = "https://strimzi.io/charts/"
  chart            = "strimzi-kafka-operator"
  version          = var.chart_versions.strimzi
  namespace        = local.kafka_namespace
  create_namespace = true
  values = [yamlencode({
    watchNamespaces = []
    nodeSelector    = { "quantcore.io/pool" = "platform" }
  })]
  depends_on = [aws_eks_node_group.this]
}

resource "helm_release" "kafka_cluster" {
  count     = var.kafka_mode == "in-cluster" ? 1 : 0
  name      = "kafka-cluster"
  chart     = "${path.module}/charts/kafka-cluster"
  namespace = local.kafka_namespace
  values = [yamlencode({
    cluster      = local.kafka_cluster
    nodeSelector = { "quantcore.io/pool" = "platform" }
  })]
  depends_on = [helm_release.strimzi]
}

# --- msk ---------------------------------------------------------------------------------

# Brokers accept traffic only from the EKS cluster's security group (every node and pod).
resource "aws_security_group" "msk" {
  count       = var.kafka_mode == "msk" ? 1 : 0
  name        = "${var.name}-msk"
  description = "MSK brokers: Kafka from the EKS cluster only"
  vpc_id      = aws_vpc.this.id
}

resource "aws_vpc_security_group_ingress_rule" "msk" {
  for_each                     = var.kafka_mode == "msk" ? { plaintext = 9092, tls = 9094 } : {}
  security_group_id            = aws_security_group.msk[0].id
  description                  = "Kafka ${each.key} from the EKS cluster"
  referenced_security_group_id = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
}

resource "aws_cloudwatch_log_group" "msk" {
  count             = var.kafka_mode == "msk" ? 1 : 0
  name              = "/aws/msk/${var.name}/brokers"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.platform.arn
}

resource "aws_msk_cluster" "this" {
  count                  = var.kafka_mode == "msk" ? 1 : 0
  cluster_name           = var.name
  kafka_version          = var.msk.kafka_version
  number_of_broker_nodes = local.msk_brokers

  broker_node_group_info {
    instance_type   = var.msk.instance_type
    client_subnets  = aws_subnet.private[*].id
    security_groups = [aws_security_group.msk[0].id]
    storage_info {
      ebs_storage_info {
        volume_size = var.msk.volume_size_gib
      }
    }
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = aws_kms_key.platform.arn
    encryption_in_transit {
      # checkov:skip=CKV_AWS_81:The MarketFeed's Kafka clients speak PLAINTEXT today (the spec has no TLS settings yet); brokers also serve TLS on 9094, only the cluster's security group reaches either port, and traffic never leaves the VPC.
      client_broker = "TLS_PLAINTEXT"
      in_cluster    = true
    }
  }

  # No client authentication: IAM or SASL/SCRAM needs credentials in every feed shard and the
  # Spark job, which the MarketFeed cannot carry yet; the security group admits only the cluster.
  client_authentication {
    unauthenticated = true
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.msk[0].name
      }
    }
  }
}
