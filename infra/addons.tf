# EKS add-ons managed here: the VPC CNI with its network-policy agent on (EKS does not enforce
# NetworkPolicies otherwise, and charts/quantcore ships one per workload), and the EBS CSI
# driver with its own IRSA role (the nodes' role has no EBS rights) for in-cluster Kafka.

resource "aws_eks_addon" "vpc_cni" {
  cluster_name = aws_eks_cluster.this.name
  addon_name   = "vpc-cni"
  # EKS installs the CNI itself at creation; take it over with our configuration.
  resolve_conflicts_on_create = "OVERWRITE"
  configuration_values        = jsonencode({ enableNetworkPolicy = "true" })
}

resource "aws_iam_role" "ebs_csi" {
  name               = "${var.name}-ebs-csi"
  assume_role_policy = data.aws_iam_policy_document.irsa_assume["ebs_csi"].json
}

resource "aws_iam_role_policy_attachment" "ebs_csi" {
  role       = aws_iam_role.ebs_csi.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
}

resource "aws_eks_addon" "ebs_csi" {
  cluster_name             = aws_eks_cluster.this.name
  addon_name               = "aws-ebs-csi-driver"
  service_account_role_arn = aws_iam_role.ebs_csi.arn
  # Add-ons need nodes to run on.
  depends_on = [aws_eks_node_group.this]
}
