"""Kafka -> Cassandra: the streaming half of the visibility pipeline.

Run it with ``./spark-submit.sh jobs/ingest.py``. One Structured Streaming query reads both
topics (clover.spans, clover.metrics), decodes the protobuf records with ``from_protobuf`` and a
descriptor set generated from ``protos/records.proto``, and writes, per micro-batch:

* ``visibility.spans`` and ``visibility.traces`` (the original's tables and columns),
* ``visibility.spans_by_bucket`` (the same spans by time bucket, for the analytics),
* ``visibility.bucket_changes`` (which buckets this batch touched),
* ``visibility.metrics`` and ``visibility.metrics_by_bucket``.

Every write is an upsert by primary key with deterministic values, so a replayed batch writes
the same rows again and creates no duplicate. The query is checkpointed: a restart resumes
from the last committed Kafka offsets. A record that does not decode is counted and skipped.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cassandra.cluster import Cluster
from kafka import KafkaAdminClient
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from clover import schema, topics
from clover.config import CHECKOUT_DIR, Config
from clover.logs import setup_logging
from jobs.buckets import bucket_ms_column, bucket_timestamp_column, shard_column
from jobs.retry import Stopped, with_backoff
from jobs.session import drop_cassandra_sessions, spark_session
from jobs.status import ingest_status_file, write_report

log = logging.getLogger("clover.ingest")

DESCRIPTOR = CHECKOUT_DIR / "protos" / "clover.desc"
SPAN_MESSAGE = "clover.records.Span"
METRIC_MESSAGE = "clover.records.Metric"
INT_MAX = 2**31 - 1
KAFKA_API_TIMEOUT_MS = 15_000


def from_protobuf(data: Column, message: str, descriptor: Path) -> Column:
    """Decode ``data`` as ``message``; a record that does not decode becomes null.

    Calls spark-protobuf's JVM function with the descriptor file's path: the 3.4 artifact this
    registry serves has that signature (pyspark 3.5's wrapper passes the file's bytes instead)."""
    spark = SparkSession.getActiveSession()
    assert spark is not None
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    options = {"mode": "PERMISSIVE"}
    return Column(
        jvm.org.apache.spark.sql.protobuf.functions.from_protobuf(data._jc, message, str(descriptor), options)
    )


def epoch_millis_to_timestamp(millis: Column) -> Column:
    return F.timestamp_millis(millis)


def span_table_rows(spans: DataFrame) -> DataFrame:
    """Rows of ``visibility.spans``: the original columns (docs/compatibility.md §1b) and the appended ones."""
    return spans.select(
        F.col("trace_id").alias("traceid"),
        F.col("span_id").alias("spanid"),
        F.least(F.col("duration_us"), F.lit(INT_MAX)).cast("int").alias("duration"),
        epoch_millis_to_timestamp(F.floor(F.col("start_time_us") / 1000)).alias("start_time"),
        F.col("process_id").alias("processid"),
        "operation_name",
        "node_id",
        "http_url",
        "user_agent",
        F.col("request_size").cast("string").alias("request_size"),
        F.col("response_size").cast("string").alias("response_size"),
        F.col("http_status_code").cast("string").alias("status_code"),
        "upstream_cluster",
        F.col("kafka_timestamp").alias("insert_time"),
        "service",
        F.col("parent_span_id").alias("parent_spanid"),
        "http_method",
        F.lower(F.col("source")).alias("source"),
        "src_ip",
        "dst_ip",
        F.col("src_port").cast("int").alias("src_port"),
        F.col("dst_port").cast("int").alias("dst_port"),
        "tags",
        span_kind_column().alias("span_kind"),
        F.when(F.col("http_host") != "", F.col("http_host")).alias("http_host"),
        F.col("grpc_status_code").alias("grpc_status_code"),
    )


def span_kind_column() -> Column:
    """``SPAN_KIND_SERVER`` -> ``server``; unspecified -> null (the analytics then falls back to Envoy's rule)."""
    kind = F.lower(F.regexp_replace(F.col("kind"), "^SPAN_KIND_", ""))
    return F.when(kind != "unspecified", kind)


# The record's fields the graph needs (jobs/graph.py), as spans_by_bucket's columns; "" is null.
GRAPH_FIELDS = (("parent_span_id", "parent_spanid"), ("src_ip", "src_ip"), ("dst_ip", "dst_ip"))


def bucket_table_rows(spans: DataFrame, bucket_seconds: int) -> DataFrame:
    """Rows of ``visibility.spans_by_bucket``."""
    return spans.select(
        bucket_timestamp_column(F.col("start_time_us"), bucket_seconds).alias("bucket"),
        shard_column(F.col("trace_id")).alias("shard"),
        F.col("trace_id").alias("traceid"),
        F.col("span_id").alias("spanid"),
        "service",
        "node_id",
        "operation_name",
        "http_method",
        "http_url",
        "user_agent",
        F.col("http_status_code").alias("status_code"),
        "upstream_cluster",
        F.col("duration_us").alias("duration_us"),
        epoch_millis_to_timestamp(F.floor(F.col("start_time_us") / 1000)).alias("start_time"),
        "request_size",
        "response_size",
        F.lower(F.col("source")).alias("source"),
        span_kind_column().alias("span_kind"),
        F.when(F.col("http_host") != "", F.col("http_host")).alias("http_host"),
        F.col("grpc_status_code").alias("grpc_status"),
        *[F.when(F.col(name) != "", F.col(name)).alias(column) for name, column in GRAPH_FIELDS],
    )


def trace_table_rows(spans: DataFrame) -> DataFrame:
    """Rows of ``visibility.traces``: each trace's process service names, sorted and distinct."""
    processes = F.array_sort(
        F.array_distinct(F.concat(F.flatten(F.collect_list("trace_processes")), F.collect_set("service")))
    )
    return spans.groupBy(F.col("trace_id").alias("traceid")).agg(processes.alias("processes"))


class ChangeMarks:
    """Writes ``visibility.bucket_changes``: which buckets a batch touched, and when."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._connect()

    def _connect(self) -> None:
        """A Cassandra session, the hosts' names resolved now (the driver resolves them only here)."""
        self.cluster = Cluster(list(self.cfg.cassandra_hosts), port=self.cfg.cassandra_port)
        self.session = self.cluster.connect(schema.KEYSPACE)
        self.insert = self.session.prepare(
            "INSERT INTO bucket_changes (ingest_minute, changed_at, bucket) VALUES (?, ?, ?)"
        )

    def reconnect(self) -> None:
        """A new session: a Cassandra replaced meanwhile may be at another address (a new pod),
        which the old session, knowing only the old one, would never reach. If Cassandra is still
        away, the next batch's marks fail and so the query, and the restart comes here again."""
        self.cluster.shutdown()
        try:
            self._connect()
        except Exception as exc:
            log.warning("reconnecting to Cassandra failed: %s", str(exc)[:300])

    def mark(self, bucket_ms: set[int]) -> None:
        now = datetime.now(UTC)
        minute = now.replace(second=0, microsecond=0)
        rows = [(minute, now, datetime.fromtimestamp(b / 1000, tz=UTC)) for b in sorted(bucket_ms)]
        for row in rows:
            self.session.execute(self.insert, row)

    def close(self) -> None:
        self.cluster.shutdown()


def metric_bucket_rows(metric_rows: DataFrame, bucket_seconds: int) -> DataFrame:
    """Rows of ``visibility.metrics_by_bucket`` from rows of ``visibility.metrics``."""
    return metric_rows.select(
        bucket_timestamp_column(F.unix_micros(F.col("monitor_time")), bucket_seconds).alias("bucket"),
        "m_name",
        "series",
        "monitor_time",
    )


def metric_table_rows(metrics: DataFrame) -> DataFrame:
    """Rows of ``visibility.metrics``; ``series`` is the label set as collector.metrics.series_key."""
    label_pairs = F.transform(
        F.array_sort(F.map_entries(F.coalesce(F.col("labels"), F.create_map().cast("map<string,string>")))),
        lambda e: F.format_string('%s="%s"', e["key"], e["value"]),
    )
    return metrics.select(
        F.col("name").alias("m_name"),
        epoch_millis_to_timestamp(F.col("timestamp_ms")).alias("monitor_time"),
        F.concat_ws(",", label_pairs).alias("series"),
        F.col("value").alias("m_value"),
        F.format_string("%d.%03d", F.floor(F.col("timestamp_ms") / 1000), F.pmod(F.col("timestamp_ms"), 1000)).alias(
            "m_time"
        ),
        "service",
    )


def write_table(frame: DataFrame, table: str) -> None:
    """Upsert ``frame`` into ``table``. A field a record does not have is left unset: written
    as null, it would cost a tombstone per row (records are immutable, so none is replaced)."""
    options = {"keyspace": schema.KEYSPACE, "table": table, "spark.cassandra.output.ignoreNulls": "true"}
    frame.write.format("org.apache.spark.sql.cassandra").options(**options).mode("append").save()


class BatchWriter:
    """The foreachBatch function: decode both topics of one micro-batch and upsert the rows."""

    def __init__(self, bucket_seconds: int, descriptor: Path, marks: ChangeMarks):
        self.bucket_seconds = bucket_seconds
        self.descriptor = descriptor
        self.marks = marks
        self.malformed = 0
        self.batches = 0
        self.spans = 0
        self.metrics = 0

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        topic = F.col("topic")
        decoded = batch.select(
            topic,
            F.when(topic == topics.SPANS, from_protobuf(F.col("value"), SPAN_MESSAGE, self.descriptor)).alias("span"),
            F.when(topic == topics.METRICS, from_protobuf(F.col("value"), METRIC_MESSAGE, self.descriptor)).alias(
                "metric"
            ),
            F.col("timestamp").alias("kafka_timestamp"),
        ).persist()
        try:
            # A record must decode and have what the tables' keys are made of (an unset proto3
            # field decodes as null): one without would fail its batch again on every retry.
            valid_span = (
                F.col("span.trace_id").isNotNull()
                & F.col("span.span_id").isNotNull()
                & F.col("span.start_time_us").isNotNull()
            )
            valid_metric = F.col("metric.name").isNotNull() & F.col("metric.timestamp_ms").isNotNull()
            span_bucket = bucket_ms_column(F.col("span.start_time_us"), self.bucket_seconds)
            metric_bucket = bucket_ms_column(F.col("metric.timestamp_ms") * 1000, self.bucket_seconds)
            tally = decoded.agg(
                F.count(F.when(topic == topics.SPANS, 1)).alias("spans_in"),
                F.count(F.when(valid_span, 1)).alias("spans"),
                F.count(F.when(topic == topics.METRICS, 1)).alias("metrics_in"),
                F.count(F.when(valid_metric, 1)).alias("metrics"),
                F.collect_set(F.when(valid_span, span_bucket)).alias("span_buckets"),
                F.collect_set(F.when(valid_metric, metric_bucket)).alias("metric_buckets"),
            ).first()
            assert tally is not None
            bad = tally["spans_in"] - tally["spans"] + tally["metrics_in"] - tally["metrics"]
            if bad:
                self.malformed += bad
                log.warning(
                    "batch %d: skipped %d records that did not decode or lack a key field (spans: trace_id, "
                    "span_id, start_time_us; metrics: name, timestamp_ms)",
                    batch_id,
                    bad,
                )
            if tally["spans"]:
                self.write_spans(decoded.where(valid_span).select("span.*", "kafka_timestamp"))
            if tally["metrics"]:
                self.write_metrics(metric_table_rows(decoded.where(valid_metric).select("metric.*")))
            # Last: the analytics recomputes a bucket once it sees its mark, so the rows come first.
            self.marks.mark(set(tally["span_buckets"]) | set(tally["metric_buckets"]))
            self.batches += 1
            self.spans += tally["spans"]
            self.metrics += tally["metrics"]
            log.info(
                "batch %d: %d spans, %d metric samples in %.1fs",
                batch_id,
                tally["spans"],
                tally["metrics"],
                time.monotonic() - started,
            )
        finally:
            decoded.unpersist()

    def write_spans(self, spans: DataFrame) -> None:
        # The original's spans table last: once a span is there, every other row of it is too.
        write_table(bucket_table_rows(spans, self.bucket_seconds), "spans_by_bucket")
        write_table(trace_table_rows(spans), "traces")
        write_table(span_table_rows(spans), "spans")

    def write_metrics(self, metric_rows: DataFrame) -> None:
        write_table(metric_bucket_rows(metric_rows, self.bucket_seconds), "metrics_by_bucket")
        write_table(metric_rows, "metrics")


def write_status(path: Path, writer: BatchWriter) -> None:
    write_report(path, batches=writer.batches, spans=writer.spans, metrics=writer.metrics, malformed=writer.malformed)


def discard_stale_checkpoint(checkpoint: str, bootstrap: str) -> None:
    """Forget a local checkpoint whose Kafka was reset (``up --fresh``): its offsets would point
    past the end of the new topics and the query would skip new records as lost. The Kafka
    cluster id is kept beside the checkpoint to tell."""
    path = Path(checkpoint.removeprefix("file://"))
    if "://" in checkpoint and not checkpoint.startswith("file://"):
        return  # a remote checkpoint (cluster mode) is the deployment's to manage
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    try:
        cluster_id = str(admin.describe_cluster()["cluster_id"])
    finally:
        admin.close()
    marker = path.parent / f"{path.name}.kafka-cluster-id"
    if marker.exists() and marker.read_text() != cluster_id and path.exists():
        log.warning("Kafka cluster changed (%s -> %s): starting from a new checkpoint", marker.read_text(), cluster_id)
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(cluster_id)


def main(argv: list[str] | None = None) -> int:
    cfg = Config.from_env()
    parser = argparse.ArgumentParser(description="Clover ingest: Kafka -> Cassandra (Structured Streaming)")
    parser.add_argument("--checkpoint", default=str(cfg.state_dir / "checkpoints" / "ingest"))
    parser.add_argument("--trigger-seconds", type=float, default=1.0, help="micro-batch interval")
    parser.add_argument("--max-offsets", type=int, default=200_000, help="records per micro-batch at most")
    parser.add_argument("--descriptor", default=str(DESCRIPTOR), help="descriptor set of protos/records.proto")
    parser.add_argument("--once", action="store_true", help="process what is in Kafka now, then stop")
    args = parser.parse_args(argv)
    setup_logging()
    logging.getLogger("py4j").setLevel(logging.WARNING)
    if not Path(args.descriptor).exists():
        log.error("descriptor set %s is missing: run `make setup`", args.descriptor)
        return 2
    stop = threading.Event()

    def request_stop(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        with_backoff(lambda: topics.ensure_topics(cfg.kafka_bootstrap), "creating the Kafka topics", stop)
        with_backoff(lambda: schema.ensure_schema(cfg), "creating the visibility schema", stop)
        with_backoff(lambda: discard_stale_checkpoint(args.checkpoint, cfg.kafka_bootstrap), "reading Kafka", stop)
        marks = with_backoff(lambda: ChangeMarks(cfg), "connecting to Cassandra", stop)
    except Stopped:
        return 0
    spark = spark_session("clover-ingest", cfg)
    batch_writer = BatchWriter(cfg.bucket_seconds, Path(args.descriptor), marks)
    log.info(
        "ingest running: %s -> Cassandra %s, checkpoint %s", ",".join(topics.ALL), cfg.cassandra_hosts, args.checkpoint
    )
    backoff = 1.0
    failed = False
    while not stop.is_set():
        batches = batch_writer.batches
        query = start_query(spark, cfg, batch_writer, args)
        while query.isActive and not stop.is_set():
            write_status(ingest_status_file(cfg), batch_writer)
            stop.wait(1.0)
        if query.isActive:
            log.info("stopping after the current batch")
            query.stop()
        exception = query.exception()
        if exception is None:
            break  # stopped on request, or --once found nothing more to read
        failed = True
        if args.once:
            log.error("ingest failed: %s", exception)
            break
        # Kafka or Cassandra went away: the checkpoint holds the last committed offsets, so the
        # restarted query resumes exactly there, with Cassandra sessions of its own.
        if batch_writer.batches > batches:
            backoff = 1.0  # the query had recovered from any earlier failure
        log.warning("query failed (%s); restarting in %.0fs", str(exception).splitlines()[0][:300], backoff)
        log.info("closed %d Cassandra sessions of the connector", drop_cassandra_sessions(spark))
        marks.reconnect()
        stop.wait(backoff)
        backoff = min(backoff * 2, 30.0)
    marks.close()
    spark.stop()
    return 1 if failed and args.once else 0


def start_query(spark: SparkSession, cfg: Config, batch_writer: BatchWriter, args: argparse.Namespace) -> Any:
    """Start the streaming query from both topics into ``batch_writer``, checkpointed."""
    source = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", cfg.kafka_bootstrap)
        .option("subscribe", ",".join(topics.ALL))
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", args.max_offsets)
        .option("failOnDataLoss", "false")
        # A consumer that knows the broker only at an address gone (a Kafka pod replaced: a new
        # address) gives up after this, and the task's retry bootstraps a new one; the default
        # (60 s, per consumer, one after the other) held the ingest for 6-7 minutes. The admin
        # client wants its request timeout no longer than its API timeout.
        .option("kafka.default.api.timeout.ms", str(KAFKA_API_TIMEOUT_MS))
        .option("kafka.request.timeout.ms", str(KAFKA_API_TIMEOUT_MS))
        .load()
    )
    writer = source.writeStream.foreachBatch(batch_writer).option("checkpointLocation", args.checkpoint)
    trigger = {"availableNow": True} if args.once else {"processingTime": f"{args.trigger_seconds} seconds"}
    return writer.trigger(**trigger).start()


if __name__ == "__main__":
    sys.exit(main())
