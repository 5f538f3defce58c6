# What the platform's Helm releases and its first MarketFeed are given, computed from the
# infrastructure's facts. Pure: no provider, no resource, so a test can evaluate it offline
# and check the result against the charts' schemas (tests/unit/test_infra_values.py).

variable "namespace" {
  description = "Namespace of the operator and its MarketFeeds."
  type        = string
}

variable "image" {
  description = "Runtime and Spark image repositories and their shared tag."
  type = object({
    repository       = string
    tag              = string
    spark_repository = string
  })
}

variable "private_subnet_cidrs" {
  description = "CIDRs of the private subnets (where MSK brokers and ElastiCache nodes live)."
  type        = list(string)
}

variable "kafka_mode" {
  description = "\"in-cluster\" or \"msk\"."
  type        = string
  validation {
    condition     = contains(["in-cluster", "msk"], var.kafka_mode)
    error_message = "kafka_mode: \"in-cluster\" or \"msk\"."
  }
}

variable "msk_bootstrap" {
  description = "MSK SASL/SCRAM (TLS) bootstrap brokers (host:9096,...); required when kafka_mode is \"msk\"."
  type        = string
  default     = ""
  validation {
    condition     = var.kafka_mode != "msk" || can(regex("^[A-Za-z0-9.-]+:9096(,[A-Za-z0-9.-]+:9096)*$", var.msk_bootstrap))
    error_message = "msk_bootstrap: host:9096[,host:9096...] (SASL/SCRAM over TLS) when kafka_mode is \"msk\"."
  }
}

variable "msk_brokers" {
  description = "Number of MSK brokers (bounds the topics' replication factor)."
  type        = number
  default     = 0
}

variable "in_cluster_kafka" {
  description = "Where the in-cluster (Strimzi) Kafka cluster runs."
  type = object({
    namespace = string
    cluster   = string
  })
  default = { namespace = "kafka", cluster = "quantcore" }
}

variable "redis_mode" {
  description = "\"in-cluster\" or \"elasticache\"."
  type        = string
  validation {
    condition     = contains(["in-cluster", "elasticache"], var.redis_mode)
    error_message = "redis_mode: \"in-cluster\" or \"elasticache\"."
  }
}

variable "elasticache_endpoint" {
  description = "ElastiCache primary endpoint address; required when redis_mode is \"elasticache\"."
  type        = string
  default     = ""
  validation {
    condition     = var.redis_mode != "elasticache" || can(regex("^[A-Za-z0-9.-]+$", var.elasticache_endpoint))
    error_message = "elasticache_endpoint: a host name when redis_mode is \"elasticache\"."
  }
}

variable "spark_role_arn" {
  description = "IAM role the Spark service account assumes (IRSA) to write checkpoints."
  type        = string
}

variable "serving_identity" {
  description = "The serving pods' service account and the IAM role it assumes (IRSA) to read the lake, for History."
  type = object({
    service_account = string
    role_arn        = string
  })
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.serving_identity.service_account)) && length(var.serving_identity.service_account) <= 63
    error_message = "serving_identity.service_account: a Kubernetes name (lower case, digits, '-'; at most 63)."
  }
}

variable "checkpoint_bucket" {
  description = "S3 bucket of the Spark checkpoints."
  type        = string
}

variable "lake_retention_days" {
  description = "Days of history the MarketFeed's lake keeps (0: all); the bucket's lifecycle rule on lake/ matches it."
  type        = number
  default     = 7
}

variable "feed" {
  description = "The first MarketFeed: its name and symbols."
  type = object({
    name    = string
    symbols = list(string)
  })
}

variable "spark_pool" {
  description = "The Spark node group: every node carries label_key = name, and a dedicated group is tainted label_key=name:NoSchedule (nodes.tf). The MarketFeed's Spark pods select it and, when dedicated, tolerate the taint."
  type = object({
    label_key = string
    name      = string
    dedicated = bool
  })
  default = { label_key = "quantcore.io/pool", name = "spark", dedicated = false }
}

locals {
  platform_nodes        = { "quantcore.io/pool" = "platform" }
  spark_service_account = "spark" # MarketFeed spec.spark.serviceAccount's default

  msk         = var.kafka_mode == "msk"
  elasticache = var.redis_mode == "elasticache"

  kafka_bootstrap   = local.msk ? var.msk_bootstrap : "${var.in_cluster_kafka.cluster}-kafka-bootstrap.${var.in_cluster_kafka.namespace}.svc:9092"
  kafka_replication = local.msk ? min(3, var.msk_brokers) : 1
  kafka_port        = local.msk ? 9096 : 9092
  # SASL/SCRAM over TLS either way, a basic-auth Secret per role. MSK's certificates chain to a
  # public CA (no CA Secret); Strimzi's to its cluster CA, copied into `kafka_ca_secret`
  # (infra/README.md, step 7).
  kafka_credentials = {
    feedSecretName   = "${var.feed.name}-kafka-feed"
    streamSecretName = "${var.feed.name}-kafka-stream"
  }
  kafka_operator_secret = "quantcore-kafka-operator"
  kafka_ca_secret       = local.msk ? null : "quantcore-kafka-ca"
  kafka_security = { for k, v in {
    credentials  = local.kafka_credentials
    caSecretName = local.kafka_ca_secret
  } : k => v if v != null }
  operator_kafka = { for k, v in {
    credentialsSecretName = local.kafka_operator_secret
    caSecretName          = local.kafka_ca_secret
  } : k => v if v != null }
  # MSK brokers have addresses in the private subnets; Strimzi's pods carry its labels. The
  # two shapes differ in type, so a JSON round trip lets one expression choose between them.
  kafka_peers = jsondecode(local.msk ? jsonencode([for cidr in var.private_subnet_cidrs : { ipBlock = { cidr = cidr } }]) : jsonencode([{
    namespaceSelector = { matchLabels = { "kubernetes.io/metadata.name" = var.in_cluster_kafka.namespace } }
    podSelector       = { matchLabels = { "strimzi.io/cluster" = var.in_cluster_kafka.cluster } }
  }]))

  # ElastiCache runs with TLS in transit, hence rediss://; its certificate chains to a public
  # CA, so no CA Secret. The relay and serve users' passwords come from a Secret by reference.
  redis_url                = local.elasticache ? "rediss://${var.elasticache_endpoint}:6379/0" : null
  redis_credentials_secret = "${var.feed.name}-redis-users"
  redis_spec = local.elasticache ? {
    mode = "external", url = local.redis_url, credentialsSecretName = local.redis_credentials_secret
  } : { mode = "managed", url = null, credentialsSecretName = null }
  redis_peers = [for cidr in(local.elasticache ? var.private_subnet_cidrs : []) : { ipBlock = { cidr = cidr } }]

  network_policies = {
    enabled    = true
    namespaces = [var.namespace]
    kafka      = { peers = local.kafka_peers, ports = [local.kafka_port] }
    # Any address on 443: besides the API server (network interfaces in the VPC), the Spark
    # job reaches S3 (checkpoints) and STS (IRSA) through this rule; the chart has no rule
    # of its own for object storage yet.
    apiServer = { peers = [], ports = [443] }
    # Empty peers with the managed Redis: the chart's own default.
    externalRedis = { peers = local.redis_peers, ports = [6379] }
  }
}

output "quantcore_values" {
  description = "Values for charts/quantcore."
  value = {
    image      = { repository = var.image.repository, tag = var.image.tag }
    sparkImage = { repository = var.image.spark_repository, tag = var.image.tag }
    operator = merge(
      {
        watchNamespaces = [var.namespace]
        nodeSelector    = local.platform_nodes
      },
      # Its own Kafka user (the operator role's basic-auth Secret) and the brokers' CA.
      { kafka = local.operator_kafka },
    )
    # The spark-operator chart creates the Spark service account, because it carries the
    # IRSA annotation (below); this chart must not create a second one.
    spark = { serviceAccount = { create = false, name = local.spark_service_account } }
    # The serving pods' account, which only this chart makes: its IRSA annotation is their
    # read-only identity on the lake (the MarketFeed names it below).
    serving = {
      serviceAccount = {
        create      = true
        name        = var.serving_identity.service_account
        annotations = { "eks.amazonaws.com/role-arn" = var.serving_identity.role_arn }
      }
    }
    networkPolicies = local.network_policies
  }
}

output "spark_operator_values" {
  description = "Values for the kubeflow spark-operator chart."
  value = {
    controller = { nodeSelector = local.platform_nodes }
    webhook    = { nodeSelector = local.platform_nodes }
    spark = {
      jobNamespaces = [var.namespace]
      serviceAccount = {
        create      = true
        name        = local.spark_service_account
        annotations = { "eks.amazonaws.com/role-arn" = var.spark_role_arn }
      }
      rbac = { create = true }
    }
  }
}

output "marketfeed" {
  description = "The first MarketFeed, wired to this infrastructure's Kafka, Redis and checkpoint bucket."
  value = {
    apiVersion = "quantcore.io/v1alpha1"
    kind       = "MarketFeed"
    metadata   = { name = var.feed.name, namespace = var.namespace }
    spec = {
      image   = "${var.image.repository}:${var.image.tag}"
      symbols = var.feed.symbols
      kafka   = merge({ bootstrap = local.kafka_bootstrap, replication = local.kafka_replication }, local.kafka_security)
      spark = {
        image          = "${var.image.spark_repository}:${var.image.tag}"
        serviceAccount = local.spark_service_account
        checkpoint     = "s3a://${var.checkpoint_bucket}/checkpoints/${var.feed.name}"
        # The driver and executors run on the Spark node group, never on the platform nodes.
        nodeSelector = { (var.spark_pool.label_key) = var.spark_pool.name }
        tolerations = var.spark_pool.dedicated ? [{
          key      = var.spark_pool.label_key
          operator = "Equal"
          value    = var.spark_pool.name
          effect   = "NoSchedule"
        }] : []
      }
      # A null url is left out of the rendered manifest (the CRD forbids it for "managed").
      redis = { for k, v in local.redis_spec : k => v if v != null }
      # Serving is TLS by default: the Secret (tls.crt, tls.key, ca.crt) is created before
      # the MarketFeed, by a cert-manager Certificate or by hand (infra/README.md, step 7).
      serving = {
        tls = { secretName = "${var.feed.name}-serving-tls" }
        # History reads the lake as this account's IRSA role (read-only on lake/).
        serviceAccount = var.serving_identity.service_account
      }
      # History beside the checkpoints, under the prefix the Spark role may write (and the
      # serving role read) and the bucket's lifecycle rule expires (checkpoints.tf).
      lake = {
        location      = "s3a://${var.checkpoint_bucket}/lake"
        retentionDays = var.lake_retention_days
      }
    }
  }
}

output "kafka_credentials_secrets" {
  description = "Role -> the basic-auth Secret its pods read (feed, stream, operator)."
  value = {
    feed     = local.kafka_credentials.feedSecretName
    stream   = local.kafka_credentials.streamSecretName
    operator = local.kafka_operator_secret
  }
}

output "kafka_ca_secret" {
  description = "In-cluster only: the Secret (key ca.crt) with Strimzi's cluster CA that the MarketFeed and the operator read, or null on MSK (a public CA)."
  value       = local.kafka_ca_secret
}

output "kafka_bootstrap" {
  description = "Kafka bootstrap servers as the cluster's pods reach them."
  value       = local.kafka_bootstrap
}

output "redis_credentials_secret" {
  description = "The Secret (keys relay-password, serve-password) an ElastiCache MarketFeed reads, or null in-cluster (the operator makes its own)."
  value       = local.elasticache ? local.redis_credentials_secret : null
}

output "redis_url" {
  description = "The Redis URL, or null when the operator runs Redis in the cluster."
  value       = local.redis_url
}
