"""Spark Structured Streaming through the Kafka connector into Redis, on real services."""

from __future__ import annotations

import json

import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from quantcore.devservices.spark import build_session

pytestmark = pytest.mark.integration


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions)])
    futures[name].result(timeout=30)


def produce(bootstrap: str, topic: str, records: list[tuple[str, dict[str, object]]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for key, value in records:
        producer.produce(topic, key=key, value=json.dumps(value))
    assert producer.flush(30) == 0


def test_stream_from_kafka_writes_latest_value_per_key_to_redis(
    kafka_bootstrap: str, redis_url: str, spark_jars: list[str], tmp_path
) -> None:
    topic = "spark-to-redis"
    create_topic(kafka_bootstrap, topic, partitions=2)
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    records = [(s, {"symbol": s, "seq": seq}) for seq in range(1, 51) for s in symbols]
    produce(kafka_bootstrap, topic, records)

    spark = build_session("test-spark-to-redis", spark_jars)
    source = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", kafka_bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
    )
    parsed = source.selectExpr(
        "CAST(key AS STRING) AS symbol",
        "CAST(get_json_object(CAST(value AS STRING), '$.seq') AS BIGINT) AS seq",
    )

    def write_batch(batch, batch_id: int) -> None:
        # Runs on the driver: collect the batch's max seq per symbol and keep the highest.
        client = redis.Redis.from_url(redis_url)
        for row in batch.groupBy("symbol").max("seq").collect():
            current = client.hget("seq", row["symbol"])
            if current is None or int(current) < row["max(seq)"]:
                client.hset("seq", row["symbol"], row["max(seq)"])
        client.incr("batches")
        client.close()

    query = (
        parsed.writeStream.foreachBatch(write_batch)
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination(300)
    assert query.exception() is None

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.hgetall("seq") == {s: "50" for s in symbols}
    assert int(client.get("batches") or 0) >= 1
