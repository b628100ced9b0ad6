"""The Spark session every Clover job uses, wired to Kafka and Cassandra from the configuration."""

from __future__ import annotations

import os
from pathlib import Path

from pyspark.sql import SparkSession

from clover.config import Config


def connector_jars(cfg: Config) -> list[Path]:
    """The Kafka and Cassandra connector jars that `make setup` put in the stack cache."""
    return sorted((cfg.stack_cache / "spark" / "lib").glob("*.jar"))


def launched_by_spark_submit() -> bool:
    """True in a driver started by spark-submit (spark-submit.sh, or a Kubernetes driver pod)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def spark_session(app_name: str, cfg: Config, shuffle_partitions: int = 4) -> SparkSession:
    """A session for ``app_name``. Under spark-submit, the master and jars it was given stand;
    a plain ``python`` run (tests, notebooks) gets ``local[*]`` and the cached connector jars."""
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.cassandra.connection.host", ",".join(cfg.cassandra_hosts))
        .config("spark.cassandra.connection.port", str(cfg.cassandra_port))
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.extensions", "com.datastax.spark.connector.CassandraSparkExtensions")
        .config("spark.cassandra.output.concurrent.writes", "16")
        # A read of many (bucket, shard) partitions becomes a parallel direct join, not one IN query.
        .config("spark.cassandra.sql.inClauseToJoinConversionThreshold", "8")
        .config("spark.cassandra.output.batch.size.bytes", "16384")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if not launched_by_spark_submit():
        jars = connector_jars(cfg)
        if not jars:
            raise RuntimeError(f"no connector jars in {cfg.stack_cache / 'spark' / 'lib'}; run `make setup`")
        builder = (
            builder.master("local[*]")
            .config("spark.driver.memory", "2g")
            .config("spark.jars", ",".join(str(j) for j in jars))
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.ui.enabled", "false")
        )
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def drop_cassandra_sessions(spark: SparkSession) -> int:
    """Close every Cassandra session the connector keeps, even those it counts as in use, so the next
    read or write opens a new one; how many were closed. Only while nothing uses them (after a
    streaming query failed): a write whose statements could not be prepared leaves its session
    counted as in use for good (connector 3.5.1), and a session whose schema refresh failed while
    Cassandra was away never completes a refresh again (Java driver 4.18.1), which every read and
    write of the connector waits for, so a query restarted on it would wait forever."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    connector = getattr(jvm.com.datastax.spark.connector.cql, "CassandraConnector$")  # the Scala object
    cache = getattr(connector, "MODULE$").sessionCache()
    sessions = cache.valuesToKeys().keySet().toList()  # TrieMap: a snapshot
    cache.evict()  # the releases waiting for their keep-alive to pass: idle sessions close now
    for i in range(sessions.size()):
        session = sessions.apply(i)
        for _ in range(cache.refCounter().get(session)):
            cache.release(session, 0)  # the last one closes it
    return int(sessions.size())
