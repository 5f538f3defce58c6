"""The signal engine: Spark Structured Streaming from Kafka to Redis."""
