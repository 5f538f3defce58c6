# The Spark job's checkpoint bucket and the two roles allowed to use it: the job's, read/write,
# and the serving pods', read-only on the lake. Each service account (the Spark one created by
# the spark-operator chart, the serving one by the QuantCore chart) assumes its role through
# IRSA; nothing else in the cluster, the QuantCore operator included, gets AWS rights.

resource "aws_s3_bucket" "checkpoints" {
  # checkov:skip=CKV2_AWS_62:Nothing consumes events about checkpoint files; the Spark job is the only writer and reader.
  # checkov:skip=CKV_AWS_18:Server access logs of a checkpoint that is rewritten every micro-batch would cost more than the bucket; enable CloudTrail S3 data events for the account if you need an audit trail.
  # checkov:skip=CKV_AWS_144:Checkpoints are rebuilt by replaying Kafka; a second region's copy doubles the cost for no recovery it adds.
  bucket_prefix = "${var.name}-checkpoints-"
  force_destroy = var.checkpoint_bucket_force_destroy
}

resource "aws_s3_bucket_public_access_block" "checkpoints" {
  bucket                  = aws_s3_bucket.checkpoints.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "checkpoints" {
  bucket = aws_s3_bucket.checkpoints.id
  rule {
    object_ownership = "BucketOwnerEnforced" # ACLs off
  }
}

resource "aws_s3_bucket_versioning" "checkpoints" {
  bucket = aws_s3_bucket.checkpoints.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "checkpoints" {
  bucket = aws_s3_bucket.checkpoints.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.platform.arn
    }
    bucket_key_enabled = true # one KMS call per object batch, not per write
  }
}

# Checkpoints are rewritten constantly: keep old versions a week (enough to roll a bad
# deploy back), not forever.
resource "aws_s3_bucket_lifecycle_configuration" "checkpoints" {
  bucket = aws_s3_bucket.checkpoints.id
  rule {
    id     = "expire-old-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
  # The lake (the MarketFeed's spec.lake, under lake/): history older than its retention is
  # deleted here, by object age; the job's file-sink logs forget those files two days later
  # (quantcore.lake.LOG_MARGIN_DAYS), so a reader never finds a logged file gone.
  dynamic "rule" {
    for_each = var.lake_retention_days > 0 ? [var.lake_retention_days] : []
    content {
      id     = "expire-lake-history"
      status = "Enabled"
      filter {
        prefix = local.lake_prefix
      }
      expiration {
        days = rule.value
      }
      noncurrent_version_expiration {
        noncurrent_days = 1
      }
      abort_incomplete_multipart_upload {
        days_after_initiation = 1
      }
    }
  }
  depends_on = [aws_s3_bucket_versioning.checkpoints]
}

data "aws_iam_policy_document" "checkpoints_tls_only" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.checkpoints.arn, "${aws_s3_bucket.checkpoints.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "checkpoints" {
  bucket     = aws_s3_bucket.checkpoints.id
  policy     = data.aws_iam_policy_document.checkpoints_tls_only.json
  depends_on = [aws_s3_bucket_public_access_block.checkpoints]
}

locals {
  spark_namespace       = var.namespace
  spark_service_account = "spark" # the MarketFeed's spec.spark.serviceAccount default
  # The MarketFeed's spec.serving.serviceAccount (the chart creates it, annotated with the role).
  serving_service_account = "quantcore-serving"
  # The two prefixes the Spark job writes: its checkpoints and the lake's tables.
  checkpoint_prefix = "checkpoints/"
  lake_prefix       = "lake/"
}

resource "aws_iam_role" "spark" {
  name               = "${var.name}-spark-checkpoints"
  assume_role_policy = data.aws_iam_policy_document.irsa_assume["spark"].json
}

data "aws_iam_policy_document" "spark_checkpoints" {
  statement {
    sid       = "ListTheBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.checkpoints.arn]
  }
  statement {
    sid     = "ReadWriteCheckpointsAndLake"
    actions = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = [
      "${aws_s3_bucket.checkpoints.arn}/${local.checkpoint_prefix}*",
      "${aws_s3_bucket.checkpoints.arn}/${local.lake_prefix}*",
    ]
  }
  statement {
    sid       = "UseTheBucketKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.platform.arn]
  }
}

resource "aws_iam_role_policy" "spark" {
  name   = "checkpoints"
  role   = aws_iam_role.spark.id
  policy = data.aws_iam_policy_document.spark_checkpoints.json
}

# History: the serving pods only read the lake (quantcore.lakemirror lists a prefix and gets
# objects), so their role can neither write nor see the checkpoints.
resource "aws_iam_role" "serving" {
  name               = "${var.name}-serving-lake"
  assume_role_policy = data.aws_iam_policy_document.irsa_assume["serving"].json
}

data "aws_iam_policy_document" "serving_lake" {
  statement {
    sid       = "ListTheLake"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.checkpoints.arn]
    # Keys under lake/ only: a listing elsewhere (checkpoints/) is refused.
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.lake_prefix}*"]
    }
  }
  statement {
    sid       = "ReadTheLake"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.checkpoints.arn}/${local.lake_prefix}*"]
  }
  # SSE-KMS objects are decrypted on read; the key only through S3, never called directly.
  statement {
    sid       = "DecryptThroughS3"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.platform.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "serving" {
  name   = "lake-read"
  role   = aws_iam_role.serving.id
  policy = data.aws_iam_policy_document.serving_lake.json
}
