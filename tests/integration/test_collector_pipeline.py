"""Collector -> Kafka -> ingest -> Cassandra, against the real backends.

Spans go into Jaeger through the OpenTelemetry SDK and metrics into Prometheus from an exporter
the test runs; the collector pulls both, and the rows that come out in Cassandra are compared
with exactly what the test made.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
import redis
import requests
from cassandra.query import ValueSequence
from kafka import KafkaProducer
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import set_span_in_context
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from clover import keys, topics
from clover.config import Config
from collector.metrics import PrometheusSource
from collector.publisher import KafkaPublisher
from collector.sources import JaegerSource, ZipkinSource
from collector.worker import Collector
from jobs.buckets import bucket_ms, shard_of
from jobs.status import ingest_status_file
from protos import records_pb2
from stack.launcher import Launcher
from stack.parts import prometheus_targets_dir
from tests.waiting import wait_until

BASE_NS = 1_700_000_000_000_000_000  # fixed span times make durations exact


def otel_provider(cfg: Config, service: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{cfg.otlp_http_url}/v1/traces")))
    return provider


def send_traces(cfg: Config, service: str, count: int, start_ns: int) -> list[dict[str, Any]]:
    """``count`` traces of a server span with the original's tags and a child span without tags."""
    provider = otel_provider(cfg, service)
    tracer = provider.get_tracer("clover-test")
    made = []
    for i in range(count):
        start = start_ns + i * 10_000_000
        root = tracer.start_span(f"GET /page{i}", start_time=start)
        attributes = {
            "node_id": service,
            "http.url": f"http://{service}:9180/page{i}",
            "user_agent": "chrome" if i % 2 == 0 else "safari",
            "request_size": "0",
            "response_size": str(1000 + i),
            "http.status_code": 200 if i < count - 1 else 503,
            "upstream_cluster": "inbound|9180||" + service,
        }
        root.set_attributes(attributes)
        context = root.get_span_context()
        child = tracer.start_span("db lookup", context=set_span_in_context(root), start_time=start + 1_000_000)
        child.end(end_time=start + 3_000_000)
        root.end(end_time=start + (5 + i) * 1_000_000)
        made.append(
            {
                "trace_id": format(context.trace_id, "032x"),
                "root_id": format(context.span_id, "016x"),
                "child_id": format(child.get_span_context().span_id, "016x"),
                "start_us": start // 1000,
                "duration_us": (5 + i) * 1000,
                **attributes,
            }
        )
    provider.shutdown()
    return made


def jaeger_has(cfg: Config, trace_ids: list[str]) -> bool:
    for trace_id in trace_ids:
        response = requests.get(f"{cfg.jaeger_url}/api/traces/{trace_id}", timeout=5)
        if response.status_code != 200 or not response.json().get("data"):
            return False
        if len(response.json()["data"][0]["spans"]) != 2:
            return False
    return True


def make_collector(cfg: Config, store: redis.Redis, source: Any = None) -> Collector:
    return Collector(
        store=store,
        source=source or JaegerSource(cfg.jaeger_url),
        prometheus=PrometheusSource(cfg.prometheus_url),
        publisher=KafkaPublisher(cfg.kafka_bootstrap, send_timeout_s=5),
        first_lookback_s=10 * 365 * 86400,  # the test's spans carry fixed, old timestamps
    )


def track(store: redis.Redis, services: list[str], prefixes: list[str] = (), suffixes: list[str] = ()) -> None:  # type: ignore[assignment]
    with store.pipeline() as pipe:
        pipe.delete(keys.VISIBILITY_SERVICES, keys.METRIC_PREFIXES, keys.METRIC_SUFFIXES, keys.CUSTOM_METRICS)
        pipe.delete(keys.COLLECTOR_WATERMARKS)
        pipe.sadd(keys.VISIBILITY_SERVICES, *[keys.underscore(s) for s in services])
        if prefixes:
            pipe.sadd(keys.METRIC_PREFIXES, *prefixes)
            pipe.sadd(keys.METRIC_SUFFIXES, *suffixes)
        pipe.execute()


def span_rows(cassandra: Any, trace_ids: list[str]) -> list[Any]:
    rows: list[Any] = []
    for trace_id in trace_ids:
        rows += list(cassandra.execute("SELECT * FROM spans WHERE traceid = %s", (trace_id,)))
    return rows


@pytest.fixture
def exporter(cfg: Config) -> Iterator[tuple[CollectorRegistry, str]]:
    """A Prometheus exporter on a free loopback port, registered with the local Prometheus."""
    registry = CollectorRegistry()
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    port = server.server_address[1]
    target = prometheus_targets_dir(cfg) / f"test-{port}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {"job": "clover-test"}}]))
    yield registry, f"127.0.0.1:{port}"
    target.unlink()
    server.shutdown()


def test_spans_and_metrics_land_in_cassandra_exactly_as_made(
    cfg: Config, store: redis.Redis, cassandra: Any, ingest: Launcher, exporter: tuple[CollectorRegistry, str]
) -> None:
    service = f"shop-{uuid.uuid4().hex[:6]}"
    registry, instance = exporter
    metric = f"cltest_{keys.underscore(service)}_requests"
    gauge = Gauge(metric, "requests by code", ["code"], registry=registry)
    gauge.labels(code="200").set(5)
    gauge.labels(code="500").set(2)
    track(store, [service], ["cltest_"], ["_requests"])
    made = send_traces(cfg, service, 3, BASE_NS)
    trace_ids = [m["trace_id"] for m in made]
    wait_until(lambda: jaeger_has(cfg, trace_ids), 60, what="Jaeger to return the traces")

    def scraped() -> bool:
        result = requests.get(f"{cfg.prometheus_url}/api/v1/query", params={"query": metric}, timeout=5).json()
        return len(result["data"]["result"]) == 2

    wait_until(scraped, 60, what="Prometheus to scrape the exporter")

    collector = make_collector(cfg, store)
    collector.run_cycle()
    assert collector.counters.spans_published == 6
    assert collector.counters.metrics_published == 2
    assert collector.counters.malformed_spans == 0
    assert service in store.smembers(keys.TRACING_SERVICES)
    assert store.get(metric) == "7.0"

    rows = wait_until(lambda: len(span_rows(cassandra, trace_ids)) == 6 and span_rows(cassandra, trace_ids), 120,
                      what="6 span rows")  # fmt: skip
    by_id = {r.spanid: r for r in rows}
    for m in made:
        root, child = by_id[m["root_id"]], by_id[m["child_id"]]
        assert (root.traceid, root.duration, root.service, root.operation_name) == (
            m["trace_id"], m["duration_us"], service, root.operation_name
        )  # fmt: skip
        assert root.start_time.timestamp() * 1_000_000 == m["start_us"]
        assert (root.http_url, root.user_agent, root.node_id) == (m["http.url"], m["user_agent"], service)
        assert (root.request_size, root.response_size, root.status_code) == (
            "0", m["response_size"], str(m["http.status_code"])
        )  # fmt: skip
        assert root.upstream_cluster == m["upstream_cluster"]
        assert root.source == "jaeger" and root.processid
        assert (child.parent_spanid, child.duration, child.http_url, child.status_code) == (
            m["root_id"], 2000, None, None
        )  # fmt: skip
        assert child.upstream_cluster == "none"

    def traces() -> dict[str, list[str]]:
        query = "SELECT * FROM traces WHERE traceid IN %s"
        return {r.traceid: r.processes for r in cassandra.execute(query, (ValueSequence(trace_ids),))}

    assert wait_until(lambda: len(traces()) == 3 and traces(), 60) == {t: [service] for t in trace_ids}
    for m in made:
        bucket = datetime.fromtimestamp(bucket_ms(m["start_us"], cfg.bucket_seconds) / 1000, tz=UTC)
        bucketed = cassandra.execute(
            "SELECT spanid, duration_us, status_code FROM spans_by_bucket WHERE bucket = %s AND shard = %s"
            " AND traceid = %s",
            (bucket, shard_of(m["trace_id"]), m["trace_id"]),
        )
        assert sorted((r.spanid, r.duration_us, r.status_code) for r in bucketed) == sorted(
            [(m["root_id"], m["duration_us"], m["http.status_code"]), (m["child_id"], 2000, None)]
        )

    metric_rows = wait_until(
        lambda: list(cassandra.execute("SELECT * FROM metrics WHERE m_name = %s", (metric,))), 60, what="metric rows"
    )
    values = {r.series.split(",")[0]: (r.m_value, r.service) for r in metric_rows}
    assert values == {'code="200"': ("5", keys.underscore(service)), 'code="500"': ("2", keys.underscore(service))}
    assert {r.series for r in metric_rows} == {
        f'code="{code}",instance="{instance}",job="clover-test"' for code in ("200", "500")
    }


class StubJaeger(BaseHTTPRequestHandler):
    """A backend answering with one good span, one without tags and one with a non-numeric duration."""

    trace: ClassVar[dict[str, Any]] = {
        "traceID": "bad0",
        "spans": [
            {"traceID": "bad0", "spanID": "s1", "operationName": "ok", "startTime": 1700000000000000, "duration": 10,
             "processID": "p1", "tags": [{"key": "http.url", "value": "/ok"}]},
            {"traceID": "bad0", "spanID": "s2", "operationName": "no tags", "startTime": 1700000000000001,
             "duration": 11, "processID": "p1"},
            {"traceID": "bad0", "spanID": "s3", "operationName": "bad", "startTime": 1700000000000002,
             "duration": "eleven", "processID": "p1"},
        ],
        "processes": {"p1": {"serviceName": "stub-svc"}},
    }  # fmt: skip

    def do_GET(self) -> None:
        if self.path.startswith("/api/services"):
            body: dict[str, Any] = {"data": ["stub-svc"]}
        else:
            body = {"data": [self.trace] if "service=stub-svc" in self.path else []}
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


def test_malformed_spans_are_counted_skipped_and_named(
    cfg: Config, store: redis.Redis, cassandra: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubJaeger)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        track(store, ["stub-svc", "no-such-service"])
        collector = make_collector(cfg, store, JaegerSource(f"http://127.0.0.1:{server.server_address[1]}"))
        collector.run_cycle()
    finally:
        server.shutdown()
    assert collector.counters.malformed_spans == 1
    assert collector.counters.spans_published == 2
    assert "skipped malformed span: jaeger span bad0/s3: duration 'eleven' is not a whole number" in caplog.text
    assert collector.counters.last_error == ""
    rows = wait_until(lambda: len(span_rows(cassandra, ["bad0"])) == 2 and span_rows(cassandra, ["bad0"]), 120,
                      what="the two good spans")  # fmt: skip
    assert sorted((r.spanid, r.http_url, r.duration) for r in rows) == [("s1", "/ok", 10), ("s2", None, 11)]


def test_a_kafka_outage_loses_no_span(cfg: Config, store: redis.Redis, cassandra: Any, ingest: Launcher) -> None:
    service = f"outage-{uuid.uuid4().hex[:6]}"
    track(store, [service])
    made = send_traces(cfg, service, 5, BASE_NS + 10**15)
    trace_ids = [m["trace_id"] for m in made]
    wait_until(lambda: jaeger_has(cfg, trace_ids), 60, what="Jaeger to return the traces")
    collector = make_collector(cfg, store)

    ingest.down(["kafka"])
    try:
        collector.run_cycle()
        assert collector.publisher.buffered == 10
        assert collector.publisher.state == "unavailable"
    finally:
        ingest.up(["kafka"])
    collector.run_cycle()
    assert collector.publisher.buffered == 0
    assert collector.counters.spans_published == 10
    wait_until(lambda: len(span_rows(cassandra, trace_ids)) == 10, 180, what="all 10 spans after the outage")


def test_a_killed_ingest_resumes_and_writes_every_span_once(cfg: Config, cassandra: Any, ingest: Launcher) -> None:
    prefix = f"kill-{uuid.uuid4().hex[:6]}"
    producer = KafkaProducer(bootstrap_servers=cfg.kafka_bootstrap)
    trace_ids = [f"{prefix}-{i}" for i in range(400)]

    def produce(part: range) -> None:
        for i in part:
            for j in range(3):
                span = records_pb2.Span(
                    trace_id=trace_ids[i], span_id=f"{j}", service=prefix, start_time_us=1_700_000_000_000_000 + i,
                    duration_us=100 + j, source=records_pb2.CLOVISOR, upstream_cluster="none",
                )  # fmt: skip
                producer.send(topics.SPANS, key=span.trace_id.encode(), value=span.SerializeToString())
        producer.flush()

    produce(range(0, 200))
    process = ingest.process("ingest")
    assert process is not None
    os.killpg(process.pid, signal.SIGKILL)
    wait_until(lambda: ingest.process("ingest") is None, 30, what="ingest to die")
    produce(range(200, 400))
    ingest.up(["ingest"])
    producer.close()

    def stored() -> int:
        return sum(
            r.count
            for chunk in range(0, 400, 100)
            for r in cassandra.execute(
                "SELECT count(*) AS count FROM spans WHERE traceid IN %s",
                (ValueSequence(trace_ids[chunk : chunk + 100]),),
            )
        )

    wait_until(lambda: stored() == 1200, 240, what="1200 spans")
    time.sleep(3)
    assert stored() == 1200


def test_records_without_a_key_field_are_skipped_and_the_stream_goes_on(
    cfg: Config, cassandra: Any, ingest: Launcher
) -> None:
    def malformed() -> int:
        status = ingest_status_file(cfg)
        return int(json.loads(status.read_text())["malformed"]) if status.exists() else 0

    before = malformed()
    trace_id = f"keyless-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=cfg.kafka_bootstrap)
    no_start = records_pb2.Span(trace_id=trace_id, span_id="a", service="keyless")  # start_time_us unset
    no_time = records_pb2.Metric(name="keyless_total", value="1")  # timestamp_ms unset
    good = records_pb2.Span(trace_id=trace_id, span_id="b", service="keyless", start_time_us=1_700_000_000_000_000)
    producer.send(topics.SPANS, key=trace_id.encode(), value=no_start.SerializeToString())
    producer.send(topics.METRICS, value=no_time.SerializeToString())
    producer.flush()
    producer.send(topics.SPANS, key=trace_id.encode(), value=good.SerializeToString())
    producer.close()
    rows = wait_until(lambda: span_rows(cassandra, [trace_id]), 120, what="the span that has its keys")
    assert [r.spanid for r in rows] == ["b"]
    wait_until(lambda: malformed() == before + 2, 30, what="the two keyless records counted")


@pytest.fixture(scope="module")
def zipkin(stack: Launcher) -> Iterator[Launcher]:
    stack.up(["zipkin"])
    yield stack
    stack.down(["zipkin"])


def test_the_zipkin_source_reads_the_zipkin_v2_api(
    cfg: Config, store: redis.Redis, cassandra: Any, ingest: Launcher, zipkin: Launcher
) -> None:
    service = f"zk-{uuid.uuid4().hex[:6]}"
    trace_id = uuid.uuid4().hex
    now_us = int(time.time() * 1_000_000)
    spans = [
        {"traceId": trace_id, "id": "00000000000000a1", "name": "get /", "timestamp": now_us - 50_000,
         "duration": 4200, "localEndpoint": {"serviceName": service},
         "tags": {"http.url": "/", "http.status_code": "200", "user_agent": "curl", "node_id": service}},
    ]  # fmt: skip
    assert requests.post(f"{cfg.zipkin_url}/api/v2/spans", json=spans, timeout=5).status_code == 202
    source = ZipkinSource(cfg.zipkin_url)
    wait_until(lambda: service in source.services(), 30, what="Zipkin to list the service")
    track(store, [service])
    collector = make_collector(cfg, store, source)
    collector.run_cycle()
    assert collector.counters.spans_published == 1
    rows = wait_until(lambda: span_rows(cassandra, [trace_id]), 120, what="the Zipkin span row")
    assert [(r.spanid, r.duration, r.http_url, r.status_code, r.user_agent, r.source, r.service) for r in rows] == [
        ("00000000000000a1", 4200, "/", "200", "curl", "zipkin", service)
    ]
