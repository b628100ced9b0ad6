"""Benchmark: sustained ingest rate, Kafka -> Cassandra, with zero loss.

  .venv/bin/python -m bench.ingest.run [--spans 200000] [--warmup 400000] [--down]

Runs on the benchmark stack (bench/stack_env.py: ports +20000, state in .clover-bench/),
started if needed:
1. baseline — the raw cassandra-driver concurrent insert rate of the rows the ingest writes
   (spans, spans_by_bucket, traces) into the same node;
2. ingest — the streaming job running warm: a warm-up load goes through it first (the JVMs
   compile their hot paths during the first few hundred thousand spans; its rate is printed
   too), then the measured spans are produced to Kafka (with librdkafka, so the producer is
   not what is measured) and the clock runs from the first record produced until the job
   reports the last one written;
then every row is counted (zero loss) and both rates and their ratio are printed, then as one
line of JSON (read by bench/cluster/run.py). ``--down`` takes the stack down at the end.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import Any

from cassandra.cluster import Cluster
from cassandra.concurrent import execute_concurrent_with_args

from bench import stack_env  # noqa: F401  (first: the benchmark stack's ports and state directory)
from bench.ingest.load import feed, make_spans
from clover import schema
from clover.config import Config
from jobs.buckets import bucket_ms, shard_of
from jobs.status import ingest_status_file as status_file
from protos import records_pb2
from stack.catalogue import local_stack
from stack.secrets import local_config

PARTS = ["infra", "ingest"]
Row = tuple[Any, ...]  # one CQL row's values


def baseline_rows(spans: list[records_pb2.Span], bucket_seconds: int) -> tuple[list[Row], list[Row], list[Row]]:
    insert_time = datetime.now(UTC)
    span_rows: list[Row] = []
    bucket_rows: list[Row] = []
    traces: dict[str, list[str]] = {}
    for s in spans:
        start = datetime.fromtimestamp(s.start_time_us // 1000 / 1000, tz=UTC)
        bucket = datetime.fromtimestamp(bucket_ms(s.start_time_us, bucket_seconds) / 1000, tz=UTC)
        span_rows.append(
            (s.trace_id, s.span_id, s.duration_us, start, s.process_id, s.operation_name, s.node_id, s.http_url,
             s.user_agent, str(s.request_size), str(s.response_size), str(s.http_status_code), s.upstream_cluster,
             insert_time, s.service, s.parent_span_id, s.http_method, "jaeger")
        )  # fmt: skip
        bucket_rows.append(
            (bucket, shard_of(s.trace_id), s.trace_id, s.span_id, s.service, s.node_id, s.operation_name,
             s.http_method, s.http_url, s.user_agent, s.http_status_code, s.upstream_cluster, s.duration_us, start,
             s.request_size, s.response_size, "jaeger")
        )  # fmt: skip
        traces[s.trace_id] = sorted(set(s.trace_processes) | {s.service})
    return span_rows, bucket_rows, list(traces.items())


def run_baseline(session: Any, spans: list[records_pb2.Span], cfg: Config, concurrency: int) -> float:
    span_rows, bucket_rows, trace_rows = baseline_rows(spans, cfg.bucket_seconds)
    insert_span = session.prepare(
        "INSERT INTO visibility.spans (traceid, spanid, duration, start_time, processid, operation_name, node_id,"
        " http_url, user_agent, request_size, response_size, status_code, upstream_cluster, insert_time, service,"
        " parent_spanid, http_method, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    insert_bucket = session.prepare(
        "INSERT INTO visibility.spans_by_bucket (bucket, shard, traceid, spanid, service, node_id, operation_name,"
        " http_method, http_url, user_agent, status_code, upstream_cluster, duration_us, start_time, request_size,"
        " response_size, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    insert_trace = session.prepare("INSERT INTO visibility.traces (traceid, processes) VALUES (?, ?)")
    started = time.perf_counter()
    for statement, rows in ((insert_bucket, bucket_rows), (insert_trace, trace_rows), (insert_span, span_rows)):
        results = execute_concurrent_with_args(session, statement, rows, concurrency=concurrency)
        failed = [r for r in results if not r.success]
        if failed:
            raise SystemExit(f"baseline: {len(failed)} inserts failed: {failed[0].result_or_exc}")
    return len(spans) / (time.perf_counter() - started)


def ingest_report(cfg: Config) -> dict[str, float]:
    try:
        report: dict[str, float] = json.loads(status_file(cfg).read_text())
        return report
    except (OSError, ValueError):
        return {}


def run_ingest(spans: list[records_pb2.Span], cfg: Config) -> float:
    return feed(cfg.kafka_bootstrap, spans, lambda: ingest_report(cfg).get("spans", 0))


def count_rows(session: Any, table: str) -> int:
    return int(session.execute(f"SELECT count(*) FROM visibility.{table}", timeout=300).one().count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=48, help="baseline in-flight inserts")
    parser.add_argument("--warmup", type=int, default=400_000, help="spans through the ingest before measuring")
    parser.add_argument("--down", action="store_true", help="take the benchmark stack down at the end")
    args = parser.parse_args()
    cfg = local_config()
    stack = local_stack(cfg)
    print(f"stack in {cfg.state_dir}")
    stack.up(PARTS, progress=lambda m: print(f"  {m}"))
    try:
        measure(cfg, args)
    finally:
        if args.down:
            stack.down(PARTS, progress=lambda m: print(f"  {m}"))


def measure(cfg: Config, args: argparse.Namespace) -> None:
    cluster = Cluster(list(cfg.cassandra_hosts), port=cfg.cassandra_port)
    session = cluster.connect()
    session.default_timeout = 60
    schema.apply_schema(session, cfg)
    start_us = int(time.time() * 1_000_000)

    schema.truncate(session, schema.tables())
    spans = make_spans(args.spans, f"base{int(time.time())}", start_us)
    baseline = run_baseline(session, spans, cfg, args.concurrency)
    print(f"baseline (cassandra-driver, {args.concurrency} concurrent): {baseline:,.0f} spans/s")

    if args.warmup:
        warm = run_ingest(make_spans(args.warmup, f"warm{int(time.time())}", start_us), cfg)
        print(f"ingest warm-up ({args.warmup:,} spans, not counted): {warm:,.0f} spans/s")
    schema.truncate(session, schema.tables())
    spans = make_spans(args.spans, f"ing{int(time.time())}", start_us)
    rate = run_ingest(spans, cfg)
    rows = {t: count_rows(session, t) for t in ("spans", "spans_by_bucket", "traces")}
    lost = args.spans - rows["spans"]
    print(f"ingest (Kafka -> Spark -> Cassandra, end to end): {rate:,.0f} spans/s")
    print(f"rows: {rows} (expected spans={args.spans:,}, traces={args.spans // 4:,}); lost: {lost}")
    print(f"ratio ingest/baseline: {rate / baseline:.2f}")
    print(json.dumps({"ingest_spans_per_s": round(rate, 1), "baseline_spans_per_s": round(baseline, 1), "lost": lost}))
    cluster.shutdown()


if __name__ == "__main__":
    main()
