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

output "kafka_bootstrap" {
  description = "Kafka bootstrap servers as the cluster's pods reach them."
  value       = module.chart_values.kafka_bootstrap
}

output "redis_url" {
  description = "The ElastiCache URL, or null when the operator runs Redis in the cluster."
  value       = module.chart_values.redis_url
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
