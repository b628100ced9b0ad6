"""Every row the ingest writes expires after the retention (CLOVER_RETENTION_SECONDS)."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from kafka import KafkaProducer

from clover import topics
from clover.config import Config
from jobs.buckets import bucket_ms, datetime_to_ms, ms_to_datetime, shard_of
from protos import records_pb2
from stack.launcher import Launcher
from tests.waiting import wait_until

TABLES = ("spans", "traces", "spans_by_bucket", "metrics", "metrics_by_bucket", "bucket_changes")


def test_the_ingest_writes_every_row_with_the_retention_ttl(cfg: Config, cassandra: Any, ingest: Launcher) -> None:
    retention = cfg.retention_seconds
    name = f"ttl_{uuid.uuid4().hex[:8]}"
    started = time.time()
    start_us = int(started * 1_000_000)
    span = records_pb2.Span(
        trace_id=name, span_id="a", service=name, start_time_us=start_us, duration_us=1234, upstream_cluster="none"
    )
    metric = records_pb2.Metric(name=name, value="3", timestamp_ms=start_us // 1000, service=name, labels={"k": "v"})
    producer = KafkaProducer(bootstrap_servers=cfg.kafka_bootstrap)
    producer.send(topics.SPANS, key=span.trace_id.encode(), value=span.SerializeToString())
    producer.send(topics.METRICS, key=metric.name.encode(), value=metric.SerializeToString())
    producer.close()
    span_bucket = bucket_ms(start_us, cfg.bucket_seconds)
    metric_bucket = bucket_ms(metric.timestamp_ms * 1000, cfg.bucket_seconds)

    # TTL() of a regular column of each row (traces.processes is a list: one TTL per element).
    queries = {
        "spans": ("SELECT TTL(duration) AS ttl FROM spans WHERE traceid = %s", (name,)),
        "traces": ("SELECT TTL(processes) AS ttl FROM traces WHERE traceid = %s", (name,)),
        "spans_by_bucket": (
            "SELECT TTL(duration_us) AS ttl FROM spans_by_bucket WHERE bucket = %s AND shard = %s AND traceid = %s",
            (ms_to_datetime(span_bucket), shard_of(name), name),
        ),
        "metrics": ("SELECT TTL(m_value) AS ttl FROM metrics WHERE m_name = %s", (name,)),
    }

    def ttls() -> dict[str, Any]:
        rows = {table: cassandra.execute(query, values).one() for table, (query, values) in queries.items()}
        return {table: row.ttl for table, row in rows.items() if row is not None}

    found = wait_until(lambda: len(ttls()) == len(queries) and ttls(), 180, what="the ingest's rows")
    elapsed = math.ceil(time.time() - started) + 1  # TTLs count whole seconds
    assert len(found["traces"]) == 1
    found["traces"] = found["traces"][0]
    within = {table: ttl is not None and retention - elapsed < ttl <= retention for table, ttl in found.items()}
    assert within == dict.fromkeys(queries, True), f"retention {retention}, {elapsed} s elapsed, TTLs {found}"

    # metrics_by_bucket and bucket_changes have key columns only, which TTL() cannot read: the
    # ingest writes them as it writes the tables above (no TTL of its own), so the table's
    # default applies, and that is the retention.
    by_bucket = "SELECT m_name FROM metrics_by_bucket WHERE bucket = %s AND m_name = %s"
    assert len(list(cassandra.execute(by_bucket, (ms_to_datetime(metric_bucket), name)))) == 1

    def marked() -> set[int]:
        minutes = range(int(started) // 60 * 60, int(time.time()) // 60 * 60 + 1, 60)
        query = "SELECT bucket FROM bucket_changes WHERE ingest_minute = %s"
        return {
            datetime_to_ms(row.bucket)
            for minute in minutes
            for row in cassandra.execute(query, (ms_to_datetime(minute * 1000),))
        }

    wait_until(lambda: {span_bucket, metric_bucket} <= marked(), 60, what="the ingest's marks of both buckets")
    defaults = cassandra.execute(
        "SELECT table_name, default_time_to_live FROM system_schema.tables WHERE keyspace_name = 'visibility'"
    )
    assert {r.table_name: r.default_time_to_live for r in defaults if r.table_name in TABLES} == dict.fromkeys(
        TABLES, retention
    )
