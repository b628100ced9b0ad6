"""Spans and metric samples a test writes straight into Cassandra, as the ingest would, with the
change marks that tell the analytics which buckets to recompute."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jobs.buckets import bucket_ms, shard_of

INBOUND, OUTBOUND = "inbound|9180||svc", "outbound|9180||svc-c"


@dataclass(frozen=True)
class SeedSpan:
    trace: str
    span: str
    service: str | None
    url: str | None
    agent: str | None
    node: str | None
    status: int | None
    duration_us: int
    upstream: str | None
    operation: str
    start_us: int
    kind: str | None = "server"
    source: str = "jaeger"
    grpc: int | None = None
    parent: str | None = None
    src_ip: str | None = None
    dst_ip: str | None = None
    request_size: int | None = None  # bytes
    response_size: int | None = None


def make_spans(now_us: int, bucket_us: int) -> list[SeedSpan]:
    old = (now_us - 1200 * 1_000_000) // bucket_us * bucket_us  # 20 minutes ago: outside the window
    recent = (now_us - 60 * 1_000_000) // bucket_us * bucket_us
    spans = []
    for i in range(40):  # svc-a, old bucket
        status = 503 if i % 10 == 0 else (404 if i % 10 == 1 else 200)
        spans.append(SeedSpan(f"a{i}", "1", "svc-a", "/" if i % 2 else "/index.html", "chrome", "svc-a", status,
                              1000 + 250 * i, INBOUND, "GET", old + i))  # fmt: skip
    for i in range(20):  # svc-a, recent bucket, a second span in half of the old traces
        spans.append(SeedSpan(f"a{i}", "2", "svc-a", "/upload", "safari", "svc-a", 200 if i % 4 else 500,
                              30_000 + 1000 * i, INBOUND, "POST", recent + i))  # fmt: skip
    for i in range(12):  # svc-a seen on the network too, for fewer requests: its figures stay the tracer's
        spans.append(SeedSpan(f"a{i}", "c", "svc-a", "/upload", "safari", "svc-a", 200, 29_000 + 900 * i, None,
                              "POST /upload", recent + 50 + i, source="clovisor"))  # fmt: skip
    for i in range(30):  # svc-b: 20 requests (one URL, absolute or not) and 10 calls out that are not
        url = "http://10.0.0.7:9180/api?q=1" if i % 2 else "/api?q=1"
        kind, upstream = ("client", "none") if i >= 25 else (None, OUTBOUND) if i >= 20 else ("server", INBOUND)
        spans.append(SeedSpan(f"b{i}", "1", "svc-b", url, "curl", "svc-b", 200, 500 + 10 * i, upstream, "GET",
                              recent + 100 + i, kind=kind))  # fmt: skip
    for i in range(6):  # clover-server1 and clover-server10: tracking one must not pick up the other
        spans.append(SeedSpan(f"s{i}", "1", "clover-server1" if i < 3 else "clover-server10", "/", "chrome",
                              "clover-server1" if i < 3 else "clover-server10", 200, 2000 * (i + 1), None, "GET",
                              recent + 200 + i))  # fmt: skip
    for i in range(12):  # svc-g: a gRPC service, 3 NOT_FOUND (5); and its client's calls, not its requests
        spans.append(SeedSpan(f"g{i}", "1", "svc-g", None, None, "svc-g", None, 700 + 50 * i, None,
                              "/greet.Greeter/SayHello" if i % 2 else "greet.Greeter/SayHello", recent + 250 + i,
                              grpc=5 if i % 4 == 0 else 0))  # fmt: skip
        spans.append(SeedSpan(f"g{i}", "0", "svc-b", None, None, "svc-b", None, 900 + 50 * i, None,
                              "greet.Greeter/SayHello", recent + 249 + i, kind="client",
                              grpc=5 if i % 4 == 0 else 0))  # fmt: skip
    for source in ("clovisor", "jaeger"):  # svc-n: a tie between the sources goes to the application's tracer
        for i in range(7):
            spans.append(SeedSpan(f"n{source}{i}", "1", "svc-n", "/n", "curl", "svc-n", 200,
                                  (3000 if source == "jaeger" else 5000) + i, None, "GET", recent + 300 + i,
                                  source=source))  # fmt: skip
    # Rows with missing columns: no URL, no user-agent, no node, no status (an internal span).
    spans.append(SeedSpan("c1", "1", "svc-c", None, None, None, 200, 700, None, "GET", recent + 400))
    spans.append(SeedSpan("c1", "2", "svc-c", "/c", None, "svc-c", None, 900, None, "db", recent + 401,
                          kind="internal"))  # fmt: skip
    return spans


def seed(cassandra: Any, spans: list[SeedSpan], bucket_seconds: int) -> None:
    """The spans in spans_by_bucket, and what the graph looks parents up by in spans."""
    insert = cassandra.prepare(
        "INSERT INTO spans_by_bucket (bucket, shard, traceid, spanid, service, node_id, operation_name, http_url,"
        " user_agent, status_code, upstream_cluster, duration_us, start_time, span_kind, source, grpc_status,"
        " parent_spanid, src_ip, dst_ip, request_size, response_size)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    insert_span = cassandra.prepare("INSERT INTO spans (traceid, spanid, service, parent_spanid) VALUES (?, ?, ?, ?)")
    buckets = set()
    for s in spans:
        bucket = bucket_ms(s.start_us, bucket_seconds)
        buckets.add(bucket)
        cassandra.execute(insert, (
            datetime.fromtimestamp(bucket / 1000, tz=UTC), shard_of(s.trace), s.trace, s.span, s.service,
            s.node, s.operation, s.url, s.agent, s.status, s.upstream, s.duration_us,
            datetime.fromtimestamp(s.start_us / 1_000_000, tz=UTC), s.kind, s.source, s.grpc, s.parent, s.src_ip,
            s.dst_ip, s.request_size, s.response_size,
        ))  # fmt: skip
        cassandra.execute(insert_span, (s.trace, s.span, s.service, s.parent))
    mark_changed(cassandra, buckets)


def mark_changed(cassandra: Any, buckets: set[int]) -> None:
    now = datetime.now(UTC)
    for bucket in buckets:
        cassandra.execute(
            "INSERT INTO bucket_changes (ingest_minute, changed_at, bucket) VALUES (%s, %s, %s)",
            (now.replace(second=0, microsecond=0), now, datetime.fromtimestamp(bucket / 1000, tz=UTC)),
        )


def seed_metric(cassandra: Any, name: str, count: int, now_us: int, bucket_seconds: int) -> list[str]:
    values = []
    buckets = set()
    for i in range(count):
        at_ms = now_us // 1000 - (count - i) * 5000
        bucket = bucket_ms(at_ms * 1000, bucket_seconds)
        buckets.add(bucket)
        moment = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
        cassandra.execute(
            "INSERT INTO metrics (m_name, monitor_time, series, m_value, m_time, service) VALUES (%s, %s, '', %s,"
            " %s, 'svc_a')",
            (name, moment, str(i), f"{at_ms / 1000:.3f}"),
        )
        cassandra.execute(
            "INSERT INTO metrics_by_bucket (bucket, m_name, series, monitor_time) VALUES (%s, %s, '', %s)",
            (datetime.fromtimestamp(bucket / 1000, tz=UTC), name, moment),
        )
        values.append(str(i))
    mark_changed(cassandra, buckets)
    return values
