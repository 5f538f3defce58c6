# The platform on the cluster: the QuantCore chart (operator, CRDs, RBAC, NetworkPolicies) and
# the kubeflow spark-operator that runs the signal job's SparkApplication.

module "chart_values" {
  source = "./modules/chart-values"

  namespace            = var.namespace
  image                = var.image
  private_subnet_cidrs = aws_subnet.private[*].cidr_block
  kafka_mode           = var.kafka_mode
  msk_bootstrap        = var.kafka_mode == "msk" ? aws_msk_cluster.this[0].bootstrap_brokers_sasl_scram : ""
  msk_brokers          = local.msk_brokers
  in_cluster_kafka     = { namespace = local.kafka_namespace, cluster = local.kafka_cluster }
  redis_mode           = var.redis_mode
  elasticache_endpoint = var.redis_mode == "elasticache" ? aws_elasticache_replication_group.redis[0].primary_endpoint_address : ""
  spark_role_arn       = aws_iam_role.spark.arn
  serving_identity     = { service_account = local.serving_service_account, role_arn = aws_iam_role.serving.arn }
  checkpoint_bucket    = aws_s3_bucket.checkpoints.id
  lake_retention_days  = var.lake_retention_days
  feed                 = { name = var.feed_name, symbols = var.feed_symbols }
  spark_pool           = { label_key = local.pool_label, name = "spark", dedicated = var.spark_nodes.dedicated }
}

resource "helm_release" "quantcore" {
  name       = "quantcore"
  chart      = "${path.module}/../charts/quantcore"
  namespace  = kubernetes_namespace_v1.platform[var.namespace].metadata[0].name
  values     = [yamlencode(module.chart_values.quantcore_values)]
  depends_on = [aws_eks_node_group.this]
}

resource "helm_release" "spark_operator" {
  name       = "spark-operator"
  repository = "https://kubeflow.github.io/spark-operator"
  chart      = "spark-operator"
  version    = var.chart_versions.spark_operator
  namespace  = kubernetes_namespace_v1.platform["spark-operator"].metadata[0].name
  values     = [yamlencode(module.chart_values.spark_operator_values)]
  # Its Spark service account goes into the QuantCore namespace, which that release creates.
  depends_on = [helm_release.quantcore]
}
