"""The graph's callers (jobs/graph.py) and its edge aggregates (jobs/facts.py) on a local Spark
session, over spans the test makes: no stack needed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pyspark.sql import SparkSession
from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType, TimestampType

from clover.config import Config
from jobs import kinds
from jobs.facts import SPAN_COLUMNS, bucket_facts, fold_facts
from jobs.graph import GRAPH_COLUMNS, with_callers
from jobs.session import spark_session

pytestmark = pytest.mark.spark

BUCKET = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
WIDTH_MS = 10_000
BEFORE = datetime(2026, 1, 1, 11, 59, 50, tzinfo=UTC)  # the bucket before
EARLIER = "bucket timestamp, traceid string, spanid string, service string"
TYPES = {"status_code": IntegerType(), "grpc_status": IntegerType(), "duration_us": LongType(),
         "bucket": TimestampType(), "start_time": TimestampType(), "request_size": LongType(),
         "response_size": LongType()}  # fmt: skip
SCHEMA = StructType([StructField(c, TYPES.get(c, StringType())) for c in (*SPAN_COLUMNS, *GRAPH_COLUMNS)])


@pytest.fixture(scope="module")
def spark(cfg: Config) -> Iterator[SparkSession]:
    # The jobs' own session (with the connector jars): the first session of the test process sets
    # the driver's class path for every later one, such as test_spark_connectors'.
    session = spark_session("clover-graph-test", cfg, shuffle_partitions=2)
    yield session
    session.stop()


def span(trace: str, span_id: str, service: str, *, parent: str | None = None, kind: str = "server",
         status: int | None = 200, source: str = "jaeger", src: str | None = None, dst: str | None = None,
         url: str | None = "/", duration_us: int = 1000, grpc: int | None = None) -> dict[str, Any]:  # fmt: skip
    return {
        "bucket": BUCKET, "traceid": trace, "service": service, "source": source, "span_kind": kind,
        "node_id": service, "operation_name": "GET", "http_url": url, "user_agent": "test",
        "status_code": status, "grpc_status": grpc, "upstream_cluster": None, "duration_us": duration_us,
        "start_time": BUCKET, "request_size": 10, "response_size": 100,
        "spanid": span_id, "parent_spanid": parent, "src_ip": src, "dst_ip": dst,
    }  # fmt: skip


def spans_of_the_test() -> list[dict[str, Any]]:
    rows = []
    for i in range(3):  # proxy -> lb: proxy's server span, its client span, lb's server span (child of the client)
        rows += [
            span(f"t{i}", "s1", "proxy"),
            span(f"t{i}", "c1", "proxy", parent="s1", kind="client", status=None),
            span(f"t{i}", "s2", "lb", parent="c1", url=f"/lb{i % 2}", status=503 if i == 2 else 200),
        ]
    # a gRPC call (no HTTP status, its target the method) and an HTTP request without a URL:
    # each on the edge, the former only among its URLs, the latter only among its status codes
    rows.append(span("g1", "c1", "proxy", kind="client", status=None))
    rows.append(span("g1", "s6", "lb", parent="c1", status=None, grpc=0, url=None))
    rows.append(span("h1", "c1", "proxy", kind="client", status=None))
    rows.append(span("h1", "s7", "lb", parent="c1", url=None))
    rows.append(span("t9", "s3", "lb", parent="stored-client"))  # its parent is in the bucket before
    rows.append(span("t8", "s4", "lb", parent="t8-internal"))  # a child of its own service: no edge
    rows.append(span("t8", "t8-internal", "lb", kind="internal", status=None))
    rows.append(span("t7", "s5", "lb", parent="nowhere"))  # a parent never stored: no caller
    # Clovisor: proxy (10.0.0.1) calls lb (10.0.0.2), both traced; nginx (10.0.0.3, no tracer) is
    # called twice by 10.0.0.9, which Clovisor does not trace.
    rows.append(span("u1", "x1", "proxy", kind="client", source="clovisor", src="10.0.0.1", dst="10.0.0.2"))
    rows.append(span("u1", "x2", "lb", source="clovisor", src="10.0.0.1", dst="10.0.0.2", parent="c1"))
    for i in range(2):
        rows.append(span(f"n{i}", "x3", "nginx", source="clovisor", src="10.0.0.9", dst="10.0.0.3", status=404))
    return rows


def test_callers_are_the_parent_service_or_the_pod_at_the_client_address(spark: SparkSession) -> None:
    spans = spark.createDataFrame(spans_of_the_test(), SCHEMA)
    # The bucket before: t9's parent, and a span also in the read (stored in two buckets: one parent).
    earlier = spark.createDataFrame([(BEFORE, "t9", "stored-client", "proxy"), (BEFORE, "t0", "c1", "proxy")], EARLIER)
    found = with_callers(spans, earlier, WIDTH_MS).where("caller IS NOT NULL").collect()
    # Only requests another service made: no client or internal span, no call within lb, no parent never stored.
    assert {(r.traceid, r.source): r.caller for r in found} == {
        **{(f"t{i}", "jaeger"): "proxy" for i in range(3)},
        ("t9", "jaeger"): "proxy",
        ("g1", "jaeger"): "proxy",
        ("h1", "jaeger"): "proxy",
        ("u1", "clovisor"): "proxy",
        ("n0", "clovisor"): "10.0.0.9",
        ("n1", "clovisor"): "10.0.0.9",
    }
    assert len(found) == 9

    bucket_ms = int(BUCKET.timestamp() * 1000)
    facts = fold_facts(bucket_facts(with_callers(spans, earlier, WIDTH_MS)).collect())[bucket_ms]
    edges = {key: agg for key, agg in facts.items() if key[0] in {k.name for k in kinds.GRAPH_KINDS}}
    assert {key: (agg.count, agg.errors, agg.n4xx, agg.n5xx) for key, agg in edges.items()} == {
        kinds.EDGE.key("proxy", "lb", "jaeger"): (6, 1, 0, 1),
        kinds.EDGE_URL.key("proxy", "lb", "jaeger", "/lb0"): (2, 1, 0, 1),
        kinds.EDGE_URL.key("proxy", "lb", "jaeger", "/lb1"): (1, 0, 0, 0),
        kinds.EDGE_URL.key("proxy", "lb", "jaeger", "/"): (1, 0, 0, 0),
        kinds.EDGE_URL.key("proxy", "lb", "jaeger", "/GET"): (1, 0, 0, 0),
        kinds.EDGE_STATUS.key("proxy", "lb", "jaeger", "200"): (4, 0, 0, 0),
        kinds.EDGE_STATUS.key("proxy", "lb", "jaeger", "503"): (1, 1, 0, 1),
        kinds.EDGE.key("proxy", "lb", "clovisor"): (1, 0, 0, 0),
        kinds.EDGE_URL.key("proxy", "lb", "clovisor", "/"): (1, 0, 0, 0),
        kinds.EDGE_STATUS.key("proxy", "lb", "clovisor", "200"): (1, 0, 0, 0),
        kinds.EDGE.key("10.0.0.9", "nginx", "clovisor"): (2, 2, 2, 0),
        kinds.EDGE_URL.key("10.0.0.9", "nginx", "clovisor", "/"): (2, 2, 2, 0),
        kinds.EDGE_STATUS.key("10.0.0.9", "nginx", "clovisor", "404"): (2, 2, 2, 0),
    }
    proxy_lb = edges[kinds.EDGE.key("proxy", "lb", "jaeger")]
    assert (proxy_lb.request_bytes, proxy_lb.response_bytes) == (60, 600)  # 6 requests of 10 bytes, 100 back


def test_without_the_graph_no_edge_is_aggregated_and_with_it_the_other_kinds_are_the_same(
    spark: SparkSession,
) -> None:
    spans = spark.createDataFrame(spans_of_the_test(), SCHEMA)
    without = fold_facts(bucket_facts(spans.select(*SPAN_COLUMNS)).collect())
    graph_kinds = {k.name for k in kinds.GRAPH_KINDS}
    assert not [key for found in without.values() for key in found if key[0] in graph_kinds]
    earlier = spark.createDataFrame([], EARLIER)
    with_graph = fold_facts(bucket_facts(with_callers(spans, earlier, WIDTH_MS)).collect())
    others = {b: {k: a for k, a in found.items() if k[0] not in graph_kinds} for b, found in with_graph.items()}
    assert others == without
