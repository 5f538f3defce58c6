# IAM roles for service accounts: the trust policy each role gets, one per Kubernetes
# service account that may assume it through the cluster's OIDC provider.

locals {
  irsa_service_accounts = {
    ebs_csi = "kube-system:ebs-csi-controller-sa"
    spark   = "${local.spark_namespace}:${local.spark_service_account}"
    serving = "${var.namespace}:${local.serving_service_account}"
  }
}

data "aws_iam_policy_document" "irsa_assume" {
  for_each = local.irsa_service_accounts

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.eks.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${each.value}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}
