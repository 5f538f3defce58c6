"""Real Kafka, Redis and Spark on loopback for tests, `make services-up` and `quantcore up`.

Each service is one module (kafka, redis, spark); jars come from Maven via `maven` and are
cached under $QUANTCORE_CACHE, keyed by version, so only the first start downloads anything.
"""
