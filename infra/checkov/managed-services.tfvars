# The managed-services shape (MSK, ElastiCache) for checkov only: with the defaults every
# count-0 resource of that shape is left out of checkov's graph, so its checks never ran.
kafka_mode = "msk"
redis_mode = "elasticache"
