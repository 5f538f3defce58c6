# Inputs. Every default is the secure, smallest-cost choice; override in a *.tfvars file.

variable "name" {
  description = "Name of the EKS cluster; also the prefix of every AWS resource created here."
  type        = string
  default     = "quantcore"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name: 3-32 characters, lowercase letters, digits and '-', starting with a letter."
  }
}

variable "region" {
  description = "AWS region to create everything in, e.g. eu-west-1."
  type        = string
  default     = "eu-west-1"
  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region: an AWS region name such as eu-west-1 or us-east-2."
  }
}

variable "kubernetes_version" {
  description = "EKS Kubernetes minor version. Keep it in EKS standard support (extended support costs 6x per cluster hour)."
  type        = string
  default     = "1.34"
  validation {
    # 1.29 is the chart's floor (CEL validation and server-side apply GA).
    condition     = can(regex("^1\\.(29|3[0-9])$", var.kubernetes_version))
    error_message = "kubernetes_version: an EKS minor version from 1.29 on, e.g. \"1.34\"."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC; split into one public and one private subnet per availability zone."
  type        = string
  default     = "10.40.0.0/16"
  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr: a valid IPv4 CIDR of /20 or larger (each private subnet gets 1/4 of it)."
  }
}

variable "availability_zones" {
  description = "How many availability zones to spread subnets and nodes over (EKS needs at least 2)."
  type        = number
  default     = 3
  validation {
    condition     = var.availability_zones >= 2 && var.availability_zones <= 3
    error_message = "availability_zones: 2 or 3."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper) instead of one per zone (survives a zone outage)."
  type        = bool
  default     = true
}

variable "api_public_access" {
  description = "Expose the Kubernetes API on a public endpoint (restricted to api_public_cidrs). Off: reachable only from inside the VPC (VPN, bastion or peering)."
  type        = bool
  default     = false
}

variable "api_public_cidrs" {
  description = "CIDRs allowed to reach the public API endpoint when api_public_access is on, e.g. your office's /32."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for c in var.api_public_cidrs : can(cidrhost(c, 0)) && !endswith(c, "/0")])
    error_message = "api_public_cidrs: valid IPv4 CIDRs, none of them /0 (the whole internet)."
  }
  validation {
    condition     = !var.api_public_access || length(var.api_public_cidrs) > 0
    error_message = "api_public_cidrs: list at least one CIDR when api_public_access is true."
  }
}

variable "platform_nodes" {
  description = "The platform node group: operator, feed shards, Redis, gRPC serving (and in-cluster Kafka)."
  type = object({
    instance_types = list(string)
    min_size       = number
    desired_size   = number
    max_size       = number
  })
  default = {
    instance_types = ["m7i.large"]
    min_size       = 2
    desired_size   = 3
    max_size       = 6
  }
  validation {
    condition     = var.platform_nodes.min_size >= 1 && var.platform_nodes.min_size <= var.platform_nodes.desired_size && var.platform_nodes.desired_size <= var.platform_nodes.max_size
    error_message = "platform_nodes: need 1 <= min_size <= desired_size <= max_size."
  }
}

variable "spark_nodes" {
  description = "The node group Spark drivers and executors are scheduled on (label quantcore.io/pool=spark)."
  type = object({
    instance_types = list(string)
    capacity_type  = string
    min_size       = number
    desired_size   = number
    max_size       = number
    dedicated      = bool
  })
  default = {
    instance_types = ["c7i.xlarge"]
    capacity_type  = "ON_DEMAND"
    min_size       = 1
    desired_size   = 2
    max_size       = 8
    # true: taint the pool so only pods tolerating quantcore.io/pool=spark land there (the
    # marketfeed_manifest output's Spark pods select the pool either way, and tolerate it).
    dedicated = false
  }
  validation {
    condition     = contains(["ON_DEMAND", "SPOT"], var.spark_nodes.capacity_type)
    error_message = "spark_nodes.capacity_type: ON_DEMAND or SPOT (SPOT is cheaper; a reclaimed executor is replayed from the checkpoint)."
  }
  validation {
    condition     = var.spark_nodes.min_size >= 0 && var.spark_nodes.min_size <= var.spark_nodes.desired_size && var.spark_nodes.desired_size <= var.spark_nodes.max_size && var.spark_nodes.max_size >= 1
    error_message = "spark_nodes: need 0 <= min_size <= desired_size <= max_size and max_size >= 1."
  }
}

variable "node_disk_gib" {
  description = "Root volume size of every node, GiB (encrypted gp3)."
  type        = number
  default     = 50
  validation {
    condition     = var.node_disk_gib >= 20 && var.node_disk_gib <= 1000
    error_message = "node_disk_gib: between 20 and 1000."
  }
}

variable "kafka_mode" {
  description = "Where Kafka runs: \"in-cluster\" (a Strimzi-managed KRaft cluster on the platform nodes) or \"msk\" (Amazon MSK in the private subnets)."
  type        = string
  default     = "in-cluster"
  validation {
    condition     = contains(["in-cluster", "msk"], var.kafka_mode)
    error_message = "kafka_mode: \"in-cluster\" or \"msk\"."
  }
}

variable "msk" {
  description = "Amazon MSK sizing, used when kafka_mode is \"msk\"."
  type = object({
    kafka_version   = string
    instance_type   = string
    brokers_per_az  = number
    volume_size_gib = number
  })
  default = {
    kafka_version   = "3.6.0"
    instance_type   = "kafka.m7g.large"
    brokers_per_az  = 1
    volume_size_gib = 100
  }
  validation {
    condition     = startswith(var.msk.instance_type, "kafka.") && var.msk.brokers_per_az >= 1 && var.msk.volume_size_gib >= 1
    error_message = "msk: instance_type starts with \"kafka.\", brokers_per_az >= 1, volume_size_gib >= 1."
  }
}

variable "kafka_passwords" {
  description = "MSK SCRAM passwords (16-128 characters each) when kafka_mode is \"msk\": feed, stream and operator (the pods read them from Secrets: `terraform output -raw kafka_credentials_manifest | kubectl apply -f -`), and admin, MSK's super user, which grants their ACLs and never reaches the cluster."
  type = object({
    feed     = string
    stream   = string
    operator = string
    admin    = string
  })
  default   = null
  sensitive = true
  validation {
    condition     = var.kafka_passwords == null ? true : alltrue([for p in values(var.kafka_passwords) : length(p) >= 16 && length(p) <= 128])
    error_message = "kafka_passwords: each 16 to 128 characters."
  }
}

variable "redis_mode" {
  description = "Where Redis runs: \"in-cluster\" (the operator's StatefulSet) or \"elasticache\" (an ElastiCache replication group, TLS, Multi-AZ)."
  type        = string
  default     = "in-cluster"
  validation {
    condition     = contains(["in-cluster", "elasticache"], var.redis_mode)
    error_message = "redis_mode: \"in-cluster\" or \"elasticache\"."
  }
}

variable "redis_passwords" {
  description = "ElastiCache RBAC passwords (16-128 characters each) when redis_mode is \"elasticache\": relay and serve (the MarketFeed reads them from its credentials Secret: `terraform output -raw redis_credentials_manifest | kubectl apply -f -`), and one for the switched-off default user, which nobody uses."
  type = object({
    relay            = string
    serve            = string
    disabled_default = string
  })
  default   = null
  sensitive = true
  validation {
    condition     = var.redis_passwords == null ? true : alltrue([for p in values(var.redis_passwords) : length(p) >= 16 && length(p) <= 128])
    error_message = "redis_passwords: each 16 to 128 characters (ElastiCache's limits)."
  }
}

variable "elasticache_node_type" {
  description = "ElastiCache node type, used when redis_mode is \"elasticache\"."
  type        = string
  default     = "cache.t4g.medium"
  validation {
    condition     = startswith(var.elasticache_node_type, "cache.")
    error_message = "elasticache_node_type: an ElastiCache node type such as cache.t4g.medium."
  }
}

variable "namespace" {
  description = "Kubernetes namespace of the QuantCore operator and its MarketFeeds."
  type        = string
  default     = "quantcore"
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace: a DNS label (lowercase letters, digits, '-')."
  }
}

variable "image" {
  description = "QuantCore images: the runtime (operator, feed shards, serving) and the Spark job's image. Push them to a registry the nodes can pull from (e.g. ECR)."
  type = object({
    repository       = string
    tag              = string
    spark_repository = string
  })
  default = {
    repository       = "quantcore/runtime"
    tag              = "0.1.0"
    spark_repository = "quantcore/spark"
  }
  validation {
    condition     = alltrue([for r in [var.image.repository, var.image.spark_repository] : can(regex("^[a-z0-9]([a-z0-9._/:-]*[a-z0-9])?$", r))]) && can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image.tag)) && var.image.tag != "latest"
    error_message = "image: repositories are lowercase image names without a tag; tag is a Docker tag other than \"latest\"."
  }
}

variable "feed_name" {
  description = "Name of the MarketFeed that the marketfeed_manifest output describes (and the grpc outputs point at)."
  type        = string
  default     = "majors"
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$", var.feed_name))
    error_message = "feed_name: a DNS label of at most 40 characters."
  }
}

variable "feed_symbols" {
  description = "Symbols of that MarketFeed."
  type        = list(string)
  default     = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]
  validation {
    condition     = length(var.feed_symbols) > 0 && alltrue([for s in var.feed_symbols : can(regex("^[A-Z0-9]{2,20}$", s))])
    error_message = "feed_symbols: at least one symbol, uppercase letters and digits (e.g. BTCUSDT)."
  }
}

variable "chart_versions" {
  description = "Versions of the third-party Helm charts installed here."
  type = object({
    spark_operator = string
    strimzi        = string
  })
  default = {
    spark_operator = "2.5.2"
    strimzi        = "0.45.0"
  }
}

variable "log_retention_days" {
  description = "Retention of the control-plane, VPC flow and MSK broker logs in CloudWatch, days."
  type        = number
  default     = 365
  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days: one of CloudWatch's retention values (1, 3, 5, 7, 14, 30, 60, 90, ..., 365, ...)."
  }
}

variable "lake_retention_days" {
  description = "Days of history the MarketFeed's lake keeps under lake/ in the checkpoint bucket (0: keep all). The bucket's lifecycle rule deletes older objects; the MarketFeed's spec.lake.retentionDays gets the same value."
  type        = number
  default     = 7
  validation {
    condition     = var.lake_retention_days >= 0 && var.lake_retention_days <= 3650 && floor(var.lake_retention_days) == var.lake_retention_days
    error_message = "lake_retention_days: whole days from 0 (keep all) to 3650."
  }
}

variable "checkpoint_bucket_force_destroy" {
  description = "Let `terraform destroy` delete the checkpoint bucket with its objects. Off: destroy stops at a non-empty bucket."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every AWS resource."
  type        = map(string)
  default     = {}
}
