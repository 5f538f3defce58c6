# Kafka, chosen by var.kafka_mode: "in-cluster" runs a Strimzi-managed KRaft cluster on the
# platform nodes (cheapest); "msk" runs Amazon MSK in the private subnets (managed, Multi-AZ).

locals {
  kafka_namespace = "kafka"
  kafka_cluster   = "quantcore"
  msk_brokers     = var.msk.brokers_per_az * length(local.azs)
}

# --- in-cluster: the Strimzi operator, then the cluster (a chart in this folder) -----------

resource "helm_release" "strimzi" {
  count      = var.kafka_mode == "in-cluster" ? 1 : 0
  name       = "strimzi"
  repository = "https://strimzi.io/charts/"
  chart      = "strimzi-kafka-operator"
  version    = var.chart_versions.strimzi
  namespace  = kubernetes_namespace_v1.platform[local.kafka_namespace].metadata[0].name
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

# SASL/SCRAM over TLS (9096) is the one listener clients use: no plaintext port is opened.
resource "aws_vpc_security_group_ingress_rule" "msk" {
  for_each                     = var.kafka_mode == "msk" ? { sasl_scram_tls = 9096 } : {}
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

# Deny whatever no ACL allows: the pipeline's users get exactly quantcore.kafkaacl's ACLs
# (`python -m quantcore.kafkaacl`), applied with Kafka's admin API; nobody else gets anything.
resource "aws_msk_configuration" "this" {
  count          = var.kafka_mode == "msk" ? 1 : 0
  name           = "${var.name}-msk"
  kafka_versions = [var.msk.kafka_version]
  server_properties = join("\n", [
    "allow.everyone.if.no.acl.found=false",
    "auto.create.topics.enable=false", # the operator creates a MarketFeed's topics
    "super.users=User:admin",          # creates the ACLs; no pod has its password
  ])
}

# One SCRAM user per role (feed, stream, operator) and admin (it grants the ACLs), each
# password in a Secrets Manager secret that MSK reads: its name must start with AmazonMSK_
# and it must use a customer-managed key.
resource "aws_secretsmanager_secret" "msk_user" {
  # checkov:skip=CKV2_AWS_57:MSK SCRAM passwords change with the MarketFeed's credential Secrets they are copied into; a rotation Lambda would break the running pods, so they are rotated by re-applying kafka_passwords
  for_each                = var.kafka_mode == "msk" ? toset(["feed", "stream", "operator", "admin"]) : toset([])
  name                    = "AmazonMSK_${var.name}_${each.key}"
  description             = "${var.name}: MSK SCRAM credentials of the ${each.key} user"
  kms_key_id              = aws_kms_key.platform.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "msk_user" {
  for_each  = aws_secretsmanager_secret.msk_user
  secret_id = each.value.id
  secret_string = jsonencode({
    username = each.key
    password = var.kafka_passwords[each.key]
  })
}

resource "aws_msk_scram_secret_association" "this" {
  count           = var.kafka_mode == "msk" ? 1 : 0
  cluster_arn     = aws_msk_cluster.this[0].arn
  secret_arn_list = [for s in aws_secretsmanager_secret.msk_user : s.arn]
  depends_on      = [aws_secretsmanager_secret_version.msk_user]
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
      # TLS only: the MarketFeed's clients speak SASL_SSL (spec.kafka.credentials).
      client_broker = "TLS"
      in_cluster    = true
    }
  }

  # SASL/SCRAM only: each pod logs in as its role's user (feed shards: feed; the Spark driver
  # and executors: stream; the operator: operator), whose ACLs say what it may touch.
  client_authentication {
    sasl {
      scram = true
    }
    unauthenticated = false
  }

  configuration_info {
    arn      = aws_msk_configuration.this[0].arn
    revision = aws_msk_configuration.this[0].latest_revision
  }

  lifecycle {
    precondition {
      condition     = var.kafka_passwords != null
      error_message = "kafka_mode \"msk\" needs kafka_passwords (feed, stream, operator)."
    }
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
