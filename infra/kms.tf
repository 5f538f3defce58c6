# One customer-managed key encrypts the cluster's Kubernetes Secrets, its logs, the checkpoint
# bucket, MSK and ElastiCache. Rotated yearly; a destroy keeps it 30 days before deletion.

data "aws_iam_policy_document" "kms" {
  # checkov:skip=CKV_AWS_111:A key policy's Resource "*" is the key itself, not every resource; writes are limited to this account's IAM and to CloudWatch Logs for our log groups.
  # checkov:skip=CKV_AWS_356:Same: in a key policy "*" can only mean this key.
  # checkov:skip=CKV_AWS_109:The account root statement is AWS's default key policy: IAM policies, not the key policy, decide who manages the key.
  # The account administers the key through IAM policies (the default key policy).
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"] # in a key policy, "*" means this key
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
  # CloudWatch Logs encrypts this platform's log groups (and only them) with it.
  statement {
    sid       = "CloudWatchLogsUse"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values = [
        "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:/aws/eks/${var.name}/*",
        "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:/aws/vpc/${var.name}/*",
        "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:/aws/msk/${var.name}/*",
      ]
    }
  }
}

resource "aws_kms_key" "platform" {
  description             = "${var.name}: EKS secrets, logs, checkpoints, MSK and ElastiCache"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "platform" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.platform.key_id
}
