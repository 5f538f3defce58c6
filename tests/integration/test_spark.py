"""Spark Structured Streaming through the Kafka connector into Redis, on real services."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from quantcore.devservices.kafka import KafkaBroker
from quantcore.stream.session import build_session

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

pytestmark = pytest.mark.integration


def create_topic(kafka: KafkaBroker, name: str, partitions: int) -> None:
    admin = AdminClient(kafka.client_config("admin"))
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions)])
    futures[name].result(timeout=30)


def produce(kafka: KafkaBroker, topic: str, records: list[tuple[str, dict[str, object]]]) -> None:
    producer = Producer({**kafka.client_config("admin"), "acks": "all"})
    for key, value in records:
        producer.produce(topic, key=key, value=json.dumps(value))
    assert producer.flush(30) == 0


def kafka_from_earliest(spark: SparkSession, kafka: KafkaBroker, topic: str) -> DataFrame:
    """A streaming read of `topic` from its first offset (key and value as Kafka binaries)."""
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", kafka.bootstrap)
        .options(**kafka.auth("admin").spark_options())  # SASL_SSL, the harness's user
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
    )


def test_stream_from_kafka_writes_latest_value_per_key_to_redis(
    kafka_service: KafkaBroker, redis_url: str, spark_jars: list[str], tmp_path
) -> None:
    topic = "spark-to-redis"
    create_topic(kafka_service, topic, partitions=2)
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    records = [(s, {"symbol": s, "seq": seq}) for seq in range(1, 51) for s in symbols]
    produce(kafka_service, topic, records)

    spark = build_session("test-spark-to-redis", spark_jars)
    source = kafka_from_earliest(spark, kafka_service, topic)
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


class RedisForeachWriter:
    """A Structured Streaming foreach writer: one Redis SET per row, as rows arrive."""

    def __init__(self, url: str) -> None:
        self.url = url

    def open(self, partition_id: int, epoch_id: int) -> bool:
        self.client = redis.Redis.from_url(self.url)
        return True

    def process(self, row) -> None:
        self.client.set(f"rt:{row.symbol}", row.price)

    def close(self, error: BaseException | None) -> None:
        self.client.close()


def test_real_time_trigger_streams_kafka_rows_to_redis_while_the_batch_runs(
    kafka_service: KafkaBroker, redis_url: str, spark_jars: list[str], tmp_path
) -> None:
    """Real-time mode (trigger(realTime=...), update mode) with a foreach sink.

    Spark 4.x allowlists only console, memory, foreach and kafka sinks for real-time mode;
    foreachBatch is refused (checked below), so the sink here is a row-wise foreach writer.
    """
    topic = "real-time"
    create_topic(kafka_service, topic, partitions=1)  # one partition: one task slot
    spark = build_session("test-real-time", spark_jars)
    rows = kafka_from_earliest(spark, kafka_service, topic).selectExpr(
        "CAST(key AS STRING) AS symbol", "CAST(value AS STRING) AS price"
    )
    query = (
        rows.writeStream.outputMode("update")
        .foreach(RedisForeachWriter(redis_url))
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        # pyspark's typing overloads predate the realTime keyword; the runtime accepts it.
        .trigger(realTime="30 seconds")  # type: ignore[call-overload]
        .start()
    )
    try:
        produce(kafka_service, topic, [(f"SYM{i}", {"p": i}) for i in range(20)])
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        expected = {f"rt:SYM{i}": json.dumps({"p": i}) for i in range(20)}
        deadline = time.monotonic() + 240
        seen: dict[str, str | bytes | None] = {}
        while time.monotonic() < deadline and query.exception() is None:
            seen = dict(zip(expected, client.mget(list(expected)), strict=True))
            if seen == expected:
                break
            time.sleep(0.2)
        assert query.exception() is None, query.exception()
        assert seen == expected
        # The rows reached Redis inside a long-running real-time batch, not at its end.
        assert query.isActive
    finally:
        query.stop()


def test_real_time_trigger_refuses_foreach_batch(
    kafka_service: KafkaBroker, spark_jars: list[str], tmp_path
) -> None:
    spark = build_session("test-real-time", spark_jars)
    rows = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", kafka_service.bootstrap)
        .options(**kafka_service.auth("admin").spark_options())
        .option("subscribe", "real-time-refused")
        .load()
    )

    def run_for_two_minutes() -> None:
        query = (
            rows.writeStream.outputMode("update")
            .foreachBatch(lambda batch, batch_id: None)
            .option("checkpointLocation", str(tmp_path / "checkpoint"))
            .trigger(realTime="10 seconds")  # type: ignore[call-overload]
            .start()
        )
        try:
            query.awaitTermination(120)
        finally:
            query.stop()

    with pytest.raises(Exception, match=r"(?i)real.?time") as refusal:
        run_for_two_minutes()
    print("real-time mode refused foreachBatch:", str(refusal.value).splitlines()[0])
