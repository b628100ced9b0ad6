"""The ingest benchmark's load: spans of a made-up service chain, produced to Kafka, and the
clock from the first record produced until the ingest reports the last one written. Shared by
bench/ingest (the local stack) and bench/cluster (Spark on Kubernetes)."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Producer

from clover import topics
from protos import records_pb2

SERVICES = ["proxy-access-control", "http-lb", "clover-server1", "clover-server2", "clover-server3"]
URLS = ["/", "/index.html", "/upload", "/test", "/clover/testurl"]
AGENTS = ["chrome", "safari", "curl/8.0", "jmeter"]


def make_spans(count: int, run: str, start_us: int) -> list[records_pb2.Span]:
    spans = []
    for i in range(count):
        trace = i // 4
        span = records_pb2.Span(
            trace_id=f"{run}-{trace:08d}",
            span_id=f"{i % 4:016x}",
            parent_span_id="" if i % 4 == 0 else f"{0:016x}",
            service=SERVICES[i % len(SERVICES)],
            operation_name=f"GET {URLS[i % len(URLS)]}",
            start_time_us=start_us + i * 50,
            duration_us=500 + (i * 37) % 20000,
            http_method="GET",
            http_url=URLS[(i // 3) % len(URLS)],
            user_agent=AGENTS[i % len(AGENTS)],
            upstream_cluster="inbound|9180||" + SERVICES[i % len(SERVICES)],
            node_id=SERVICES[i % len(SERVICES)],
            source=records_pb2.JAEGER,
            trace_processes=SERVICES[:3],
            process_id="p1",
        )
        span.http_status_code = 200 if i % 50 else 503
        span.request_size = 0
        span.response_size = 1000 + i % 5000
        spans.append(span)
    return spans


def feed(bootstrap: str, spans: list[records_pb2.Span], ingested: Callable[[], float], timeout: float = 900) -> float:
    """Produce ``spans`` to ``bootstrap`` and wait until ``ingested()`` (the ingest's running
    count of spans written) grew by as many; spans per second, end to end."""
    before = ingested()
    records = [(span.trace_id.encode(), span.SerializeToString()) for span in spans]
    # librdkafka, so that producing is not what is measured.
    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": "lz4", "linger.ms": 20})
    started = time.perf_counter()
    for key, value in records:
        while True:
            try:
                producer.produce(topics.SPANS, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush()
    produced = time.perf_counter()
    print(f"  produced {len(spans):,} records to Kafka in {produced - started:.1f}s")
    target = before + len(spans)
    while (done := ingested()) < target:
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"ingest: only {done - before:,.0f} spans after {timeout:.0f}s")
        time.sleep(0.2)
    return len(spans) / (time.perf_counter() - started)
