"""Benchmark: the visibility analytics (jobs/visibility.py).

  .venv/bin/python -m bench.analytics.run [--full 1000000] [--small 100000] [--large 2000000]

On the benchmark stack (bench/stack_env.py), with spans written straight into
spans_by_bucket by Spark (10,000 per 10-s bucket) and one warm Spark session:
  (a) a full run over --full stored spans (empty analytics state: every bucket is new), with the
      graph (jobs/graph.py: each span after the first of its trace is a call from the span
      before) and without it, over the same stored spans, alternated --repeat times; the medians
      and their ratio;
  (b) an incremental run adding 10,000 spans on top of --small stored spans, and the same on top
      of --large, each without and with the graph (each its own new bucket, on the same state); the
      ratio of the run times on the two sizes (cost should follow new data);
  (c) freshness: with the ingest job and the analytics runner running, the time from a span
      entering Kafka to its URL appearing in Redis, p50 and p95 over --probes spans.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psutil
import redis
from cassandra.cluster import Cluster
from kafka import KafkaProducer
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from bench import stack_env  # noqa: F401  (sets the benchmark stack's ports before main() reads them)
from clover import keys, schema, topics
from clover.config import Config
from clover.logs import setup_logging
from jobs.buckets import shard_column
from jobs.session import spark_session
from jobs.state import DERIVED_TABLES
from jobs.visibility import VisibilityAnalytics
from protos import records_pb2
from stack.catalogue import local_stack
from stack.secrets import local_config

PER_BUCKET = 10_000
SERVICES = ["proxy-access-control", "http-lb", "clover-server1", "clover-server2", "clover-server3"]
URLS = [f"/page/{i}" for i in range(20)]
AGENTS = ["chrome", "safari", "curl/8.0", "jmeter"]


def pick(values: list[str], index: Column) -> Column:
    return F.element_at(F.array(*[F.lit(v) for v in values]), (index % len(values) + 1).cast("int"))


def synthetic_spans(spark: SparkSession, count: int, first_bucket_ms: int, width_ms: int, run: str) -> DataFrame:
    i = F.col("id")
    bucket_ms = F.lit(first_bucket_ms) + (i / PER_BUCKET).cast("long") * width_ms
    start_ms = bucket_ms + i % width_ms
    trace = F.concat(F.lit(run + "-"), (i / 4).cast("long").cast("string"))
    status = F.when(i % 50 == 0, 503).when(i % 37 == 0, 404).otherwise(200)
    return spark.range(count).select(
        F.timestamp_millis(bucket_ms).alias("bucket"),
        shard_column(trace).alias("shard"),
        trace.alias("traceid"),
        (i % 4).cast("string").alias("spanid"),
        F.when(i % 4 > 0, (i % 4 - 1).cast("string")).alias("parent_spanid"),
        pick(SERVICES, i).alias("service"),
        pick(SERVICES, i).alias("node_id"),
        F.lit("GET").alias("operation_name"),
        F.lit("GET").alias("http_method"),
        pick(URLS, i / 3).alias("http_url"),
        pick(AGENTS, i).alias("user_agent"),
        status.alias("status_code"),
        F.when(i % 5 == 0, "outbound|9180||http-lb").otherwise("inbound|9180||svc").alias("upstream_cluster"),
        (F.lit(200) + (i * 7919) % 50_000).alias("duration_us"),
        F.timestamp_millis(start_ms).alias("start_time"),
        F.lit(0).cast("long").alias("request_size"),
        (F.lit(500) + i % 4000).alias("response_size"),
        F.lit("jaeger").alias("source"),
        F.when(i % 5 == 0, "client").otherwise("server").alias("span_kind"),
    )


def store_spans(spark: SparkSession, count: int, first_bucket_ms: int, width_ms: int) -> None:
    """Write ``count`` spans (10,000 per bucket from ``first_bucket_ms``) and their change marks."""
    spans = synthetic_spans(spark, count, first_bucket_ms, width_ms, uuid.uuid4().hex[:8])
    options = {"keyspace": schema.KEYSPACE}
    spans.write.format("org.apache.spark.sql.cassandra").options(table="spans_by_bucket", **options).mode(
        "append"
    ).save()
    now = datetime.now(UTC)
    buckets = spark.range((count + PER_BUCKET - 1) // PER_BUCKET).select(
        F.timestamp_millis(F.lit(first_bucket_ms) + F.col("id") * width_ms).alias("bucket"),
        F.lit(now.replace(second=0, microsecond=0)).alias("ingest_minute"),
        F.lit(now).alias("changed_at"),
    )
    buckets.write.format("org.apache.spark.sql.cassandra").options(table="bucket_changes", **options).mode(
        "append"
    ).save()


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User and system CPU seconds used so far by ``processes`` and their children."""
    total = 0.0
    for proc in processes:
        for one in (proc, *proc.children(recursive=True)):
            with contextlib.suppress(psutil.NoSuchProcess):
                times = one.cpu_times()
                total += times.user + times.system
    return total


def timed_run(analytics: VisibilityAnalytics, measured: list[psutil.Process]) -> tuple[float, float]:
    """The run's wall time and the CPU seconds the Spark driver and Cassandra used in it: on a
    machine shared with other work, the CPU is the steadier figure."""
    cpu, started = cpu_seconds(measured), time.perf_counter()
    analytics.run_once()
    return time.perf_counter() - started, cpu_seconds(measured) - cpu


def derived_state_dropped(session: Any, store: redis.Redis) -> None:
    """The stored spans kept, the analytics' own state and results gone: the next run is a full one."""
    schema.truncate(session, DERIVED_TABLES)
    session.execute(f"DELETE FROM {schema.KEYSPACE}.analytics_state WHERE name = 'progress'")
    for key in store.smembers(keys.PUBLISHED_KEYS):
        store.delete(key)


def fresh_state(session: object, store: redis.Redis) -> None:
    schema.truncate(session, schema.tables())
    store.flushdb()
    store.sadd(keys.VISIBILITY_SERVICES, *[keys.underscore(s) for s in SERVICES])


def freshness(cfg: Config, store: redis.Redis, probes: int) -> list[float]:
    """Seconds from a span entering Kafka to its URL in span_urls_z, with ingest and runner on."""
    producer = KafkaProducer(bootstrap_servers=cfg.kafka_bootstrap)
    store.set(keys.ANALYTICS_ENABLED, "1")
    latencies = []
    for n in range(probes):
        url = f"/fresh/{uuid.uuid4().hex[:10]}"
        span = records_pb2.Span(
            trace_id=uuid.uuid4().hex, span_id="1", service="proxy-access-control", http_url=url,
            start_time_us=int(time.time() * 1_000_000), duration_us=1000, upstream_cluster="none",
        )  # fmt: skip
        span.http_status_code = 200
        sent = time.perf_counter()
        producer.send(topics.SPANS, key=span.trace_id.encode(), value=span.SerializeToString())
        producer.flush()
        while store.zscore(keys.SPAN_URLS_Z, url) is None:
            if time.perf_counter() - sent > 120:
                raise SystemExit(f"probe {n}: {url} not in Redis after 120s")
            time.sleep(0.05)
        latencies.append(time.perf_counter() - sent)
        time.sleep(1.3)  # spread the probes over the runner's cycle
    producer.close()
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=2_000_000)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=2, help="(a): full runs of each, alternated")
    parser.add_argument("--parts", default="abc", help="which measurements to make (a, b, c)")
    args = parser.parse_args()
    setup_logging()
    logging.getLogger("py4j").setLevel(logging.WARNING)
    cfg = local_config()
    stack = local_stack(cfg)
    stack.down(["analytics"])
    # (a) and (b) read and write Cassandra and Redis only; (c) runs the pipeline.
    stack.up(["infra"] if "c" in args.parts else ["redis", "cassandra"], progress=lambda m: print(f"  {m}"))
    cluster = Cluster(list(cfg.cassandra_hosts), port=cfg.cassandra_port)
    session = cluster.connect()
    session.default_timeout = 300
    schema.apply_schema(session, cfg)
    store = redis.Redis.from_url(cfg.redis_url, decode_responses=True)
    spark = spark_session("clover-bench-analytics", cfg)
    width = cfg.bucket_seconds * 1000
    now_ms = int(time.time() * 1000) // width * width

    analytics = VisibilityAnalytics(spark, cfg)
    cassandra = stack.process("cassandra")
    measured = [psutil.Process(), *([cassandra] if cassandra else [])]  # this process holds the Spark JVM
    if "a" in args.parts:
        fresh_state(session, store)
        store_spans(spark, args.full, now_ms - (args.full // PER_BUCKET) * width, width)
        without_graph = VisibilityAnalytics(spark, cfg, graph=False)
        timings: dict[bool, list[float]] = {False: [], True: []}
        cpu: dict[bool, list[float]] = {False: [], True: []}
        for graph in (False, True) * args.repeat:  # alternated: a warmer JVM or cache favours neither
            derived_state_dropped(session, store)
            chosen = analytics if graph else without_graph
            chosen.load_state()
            wall, used = timed_run(chosen, measured)
            timings[graph].append(wall)
            cpu[graph].append(used)
            print(f"    full run {'with' if graph else 'without'} the graph: {wall:.1f}s, {used:.1f} CPU s "
                  f"(load average {os.getloadavg()[0]:.1f})")  # fmt: skip
        without_graph.close()
        baseline, full = statistics.median(timings[False]), statistics.median(timings[True])
        cpu_baseline, cpu_full = statistics.median(cpu[False]), statistics.median(cpu[True])
        edges = len(store.hgetall(keys.graph()))
        print(
            f"(a) full run over {args.full:,} stored spans (median of {args.repeat}): without the graph "
            f"{baseline:.1f}s, with it {full:.1f}s (target < 60 s, {edges} edges); ratio {full / baseline:.2f} "
            f"(target <= 1.15); CPU of Spark and Cassandra {cpu_baseline:.1f} / {cpu_full:.1f} s, "
            f"ratio {cpu_full / cpu_baseline:.2f}"
        )
        print(f"    span_count={store.get(keys.SPAN_COUNT)!s} trace_count={store.get(keys.TRACE_COUNT)!s}")

    incremental: dict[tuple[int, bool], float] = {}
    for stored in (args.small, args.large) if "b" in args.parts else ():
        fresh_state(session, store)
        store_spans(spark, stored, now_ms - (stored // PER_BUCKET + 2) * width, width)
        analytics.load_state()
        analytics.run_once()  # absorb what is stored
        for graph, bucket in ((False, now_ms - width), (True, now_ms)):  # the same state, a new bucket each
            chosen = analytics if graph else VisibilityAnalytics(spark, cfg, graph=False)
            chosen.load_state()
            chosen.run_once()  # a runner new to the state re-reads the last OVERLAP of changes: not measured
            store_spans(spark, 10_000, bucket, width)
            incremental[(stored, graph)] = timed_run(chosen, measured)[0]
            if not graph:
                chosen.close()
        assert store.get(keys.SPAN_COUNT) == str(stored + 20_000), store.get(keys.SPAN_COUNT)
        print(f"(b) +10,000 spans on top of {stored:,}: {incremental[(stored, True)]:.2f}s with the graph, "
              f"{incremental[(stored, False)]:.2f}s without")  # fmt: skip
    if incremental:
        for graph in (True, False):
            ratio = incremental[(args.large, graph)] / incremental[(args.small, graph)]
            print(f"    ratio {args.large:,} / {args.small:,} {'with' if graph else 'without'} the graph: {ratio:.2f} "
                  "(target < 1.5)")  # fmt: skip
    analytics.close()
    spark.stop()
    if "c" not in args.parts:
        cluster.shutdown()
        return

    fresh_state(session, store)
    stack.up(["ingest", "analytics"], progress=lambda m: print(f"  {m}"))
    latencies = freshness(cfg, store, args.probes)
    print(
        f"(c) freshness Kafka -> Redis over {len(latencies)} spans: p50 {percentile(latencies, 0.5):.1f}s, "
        f"p95 {percentile(latencies, 0.95):.1f}s, mean {statistics.mean(latencies):.1f}s (target p95 < 15 s)"
    )
    stack.down(["analytics"])
    cluster.shutdown()


if __name__ == "__main__":
    main()
