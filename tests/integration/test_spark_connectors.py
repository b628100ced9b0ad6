"""A local[*] Spark session with the pinned connectors reads Kafka and Cassandra."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from cassandra.cluster import Cluster
from kafka import KafkaProducer
from pyspark.sql import SparkSession

from clover.config import Config
from jobs.session import spark_session
from stack.launcher import Launcher

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def spark(stack: Launcher, cfg: Config) -> Iterator[SparkSession]:
    session = spark_session("clover-connector-test", cfg)
    yield session
    session.stop()


def test_spark_reads_a_kafka_topic(spark: SparkSession, cfg: Config) -> None:
    topic = f"spark-test-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=cfg.kafka_bootstrap)
    for i in range(3):
        producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    producer.flush()
    producer.close()
    frame = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", cfg.kafka_bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
    )
    rows = sorted((r.key.decode(), r.value.decode()) for r in frame.select("key", "value").collect())
    assert rows == [("k0", "v0"), ("k1", "v1"), ("k2", "v2")]


def test_spark_reads_a_cassandra_table(spark: SparkSession, cfg: Config) -> None:
    cluster = Cluster(list(cfg.cassandra_hosts), port=cfg.cassandra_port)
    session = cluster.connect()
    session.execute(
        "CREATE KEYSPACE IF NOT EXISTS spark_probe"
        " WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    session.execute("CREATE TABLE IF NOT EXISTS spark_probe.items (id text PRIMARY KEY, size int)")
    for item, size in (("a", 1), ("b", 20), ("c", 300)):
        session.execute("INSERT INTO spark_probe.items (id, size) VALUES (%s, %s)", (item, size))
    cluster.shutdown()
    frame = spark.read.format("org.apache.spark.sql.cassandra").options(keyspace="spark_probe", table="items").load()
    assert sorted((r.id, r.size) for r in frame.collect()) == [("a", 1), ("b", 20), ("c", 300)]
