# How to reach what was built. `terraform output next_steps` prints the walk-through.

output "cluster_name" {
  description = "The EKS cluster's name."
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "The Kubernetes API endpoint (private unless api_public_access is on)."
  value       = aws_eks_cluster.this.endpoint
}

output "kubeconfig_command" {
  description = "Writes a kubeconfig entry for this cluster (needs the AWS CLI and network access to the endpoint)."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${aws_eks_cluster.this.name}"
}

output "checkpoint_bucket" {
  description = "S3 bucket holding the Spark checkpoints."
  value       = aws_s3_bucket.checkpoints.id
}

output "spark_role_arn" {
  description = "IAM role of the Spark service account (IRSA): read/write on the checkpoint bucket only."
  value       = aws_iam_role.spark.arn
}

output "serving_role_arn" {
  description = "IAM role of the serving pods' service account (IRSA): read-only on the lake (lake/ of the checkpoint bucket), for History."
  value       = aws_iam_role.serving.arn
}

output "kafka_bootstrap" {
  description = "Kafka bootstrap servers as the cluster's pods reach them."
  value       = module.chart_values.kafka_bootstrap
}

output "redis_url" {
  description = "The ElastiCache URL, or null when the operator runs Redis in the cluster."
  value       = module.chart_values.redis_url
}

output "redis_credentials_manifest" {
  description = "ElastiCache only: the Secret with the relay and serve users' passwords that the MarketFeed references: `terraform output -raw redis_credentials_manifest | kubectl apply -f -`."
  sensitive   = true
  value = var.redis_mode == "elasticache" ? yamlencode({
    apiVersion = "v1"
    kind       = "Secret"
    type       = "Opaque"
    metadata   = { name = module.chart_values.redis_credentials_secret, namespace = var.namespace }
    stringData = {
      "relay-password" = var.redis_passwords.relay
      "serve-password" = var.redis_passwords.serve
    }
  }) : null
}

output "kafka_credentials_manifest" {
  description = "MSK only: the basic-auth Secrets with the feed, stream and operator users' SCRAM passwords that the MarketFeed and the operator reference: `terraform output -raw kafka_credentials_manifest | kubectl apply -f -`."
  sensitive   = true
  value = var.kafka_mode == "msk" ? join("---\n", [
    for role, secret in module.chart_values.kafka_credentials_secrets : yamlencode({
      apiVersion = "v1"
      kind       = "Secret"
      type       = "kubernetes.io/basic-auth"
      metadata   = { name = secret, namespace = var.namespace }
      stringData = { username = role, password = var.kafka_passwords[role] }
    })
  ]) : null
}

output "kafka_ca_secret" {
  description = "In-cluster Kafka only: the Secret to hold Strimzi's cluster CA (ca.crt) in the operator's namespace, or null on MSK."
  value       = module.chart_values.kafka_ca_secret
}

output "marketfeed_manifest" {
  description = "A MarketFeed wired to this Kafka, Redis and checkpoint bucket: `terraform output -raw marketfeed_manifest | kubectl apply -f -`."
  value       = yamlencode(module.chart_values.marketfeed)
}

output "grpc_endpoint" {
  description = "The MarketFeed's gRPC service as pods inside the cluster reach it."
  value       = "${var.feed_name}-serve.${var.namespace}.svc.cluster.local:50051"
}

output "grpc_port_forward_command" {
  description = "Forwards the gRPC service to 127.0.0.1:50051 on your machine."
  value       = "kubectl -n ${var.namespace} port-forward svc/${var.feed_name}-serve 50051:50051"
}
