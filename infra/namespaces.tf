# The namespaces the releases go into, made here rather than by `helm install
# --create-namespace`, so each carries its Pod Security labels from the start. QuantCore's pods
# (operator, shards, Redis, serving, the Spark driver and executors) all meet `restricted`, so
# it is enforced there; Strimzi and the spark-operator are held to `baseline` and warned about
# `restricted`, since their charts do not promise it.

locals {
  pod_security = {
    (var.namespace)         = "restricted"
    "spark-operator"        = "baseline"
    (local.kafka_namespace) = "baseline"
  }
}

resource "kubernetes_namespace_v1" "platform" {
  for_each = { for name, level in local.pod_security : name => level if name != local.kafka_namespace || var.kafka_mode == "in-cluster" }
  metadata {
    name = each.key
    labels = {
      "pod-security.kubernetes.io/enforce"         = each.value
      "pod-security.kubernetes.io/enforce-version" = "latest"
      "pod-security.kubernetes.io/warn"            = "restricted"
      "pod-security.kubernetes.io/audit"           = "restricted"
    }
  }
  depends_on = [aws_eks_node_group.this]
}
