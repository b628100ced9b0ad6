"""Backend JSON -> Span records: the original's tag mapping, optional columns, malformed spans."""

from __future__ import annotations

from typing import Any

from collector.convert import MalformedSpan, jaeger_trace_spans, zipkin_trace_spans
from protos import records_pb2


def jaeger_trace(**span_overrides: Any) -> dict[str, Any]:
    child = {
        "traceID": "t1",
        "spanID": "s2",
        "operationName": "GET /index.html",
        "references": [{"refType": "CHILD_OF", "traceID": "t1", "spanID": "s1"}],
        "startTime": 1700000000123456,
        "duration": 2500,
        "processID": "p2",
        "tags": [
            {"key": "node_id", "type": "string", "value": "http-lb"},
            {"key": "http.url", "type": "string", "value": "http://http-lb:9180/index.html"},
            {"key": "user_agent", "type": "string", "value": "chrome"},
            {"key": "request_size", "type": "string", "value": "0"},
            {"key": "response_size", "type": "int64", "value": 4096},
            {"key": "http.status_code", "type": "int64", "value": 200},
            {"key": "upstream_cluster", "type": "string", "value": "outbound|9180||clover-server1"},
        ],
    }
    child.update(span_overrides)
    root = {"traceID": "t1", "spanID": "s1", "operationName": "GET /", "startTime": 1700000000000000,
            "duration": 9000, "processID": "p1", "tags": []}  # fmt: skip
    return {
        "traceID": "t1",
        "spans": [root, child],
        "processes": {"p1": {"serviceName": "proxy-access-control"}, "p2": {"serviceName": "http-lb"}},
    }


def test_a_jaeger_span_maps_every_original_column() -> None:
    _, child = list(jaeger_trace_spans(jaeger_trace()))
    assert isinstance(child, records_pb2.Span)
    assert (child.trace_id, child.span_id, child.parent_span_id) == ("t1", "s2", "s1")
    assert (child.service, child.operation_name, child.process_id) == ("http-lb", "GET /index.html", "p2")
    assert (child.start_time_us, child.duration_us) == (1700000000123456, 2500)
    assert (child.node_id, child.http_url, child.user_agent) == ("http-lb", "http://http-lb:9180/index.html", "chrome")
    assert (child.request_size, child.response_size, child.http_status_code) == (0, 4096, 200)
    assert child.upstream_cluster == "outbound|9180||clover-server1"
    assert list(child.trace_processes) == ["proxy-access-control", "http-lb"]
    assert child.source == records_pb2.JAEGER
    assert child.tags["response_size"] == "4096"


def test_a_span_without_tags_is_kept_with_empty_columns() -> None:
    root, _ = list(jaeger_trace_spans(jaeger_trace()))
    assert isinstance(root, records_pb2.Span)
    assert (root.http_url, root.user_agent, root.node_id) == ("", "", "")
    assert root.upstream_cluster == "none"
    assert not root.HasField("http_status_code")
    assert not root.HasField("request_size") and not root.HasField("response_size")


def test_a_non_numeric_duration_is_malformed_and_named() -> None:
    _, child = list(jaeger_trace_spans(jaeger_trace(duration="slow")))
    assert isinstance(child, MalformedSpan)
    assert str(child) == "jaeger span t1/s2: duration 'slow' is not a whole number"


def test_a_span_without_an_id_is_malformed() -> None:
    _, child = list(jaeger_trace_spans(jaeger_trace(spanID="")))
    assert isinstance(child, MalformedSpan)
    assert str(child) == "jaeger span t1/: missing spanID"


def test_a_zipkin_trace_maps_to_spans() -> None:
    trace = [
        {
            "traceId": "z1",
            "id": "a",
            "name": "get /upload",
            "timestamp": 1700000000500000,
            "duration": 1200,
            "localEndpoint": {"serviceName": "clover-server1"},
            "tags": {"http.url": "/upload", "http.status_code": "404", "user_agent": "safari"},
        },
        {"traceId": "z1", "id": "b", "parentId": "a", "timestamp": "soon", "localEndpoint": {"serviceName": "x"}},
    ]
    good, bad = list(zipkin_trace_spans(trace))
    assert isinstance(good, records_pb2.Span)
    assert (good.trace_id, good.span_id, good.service, good.duration_us) == ("z1", "a", "clover-server1", 1200)
    assert (good.http_url, good.http_status_code, good.user_agent) == ("/upload", 404, "safari")
    assert good.source == records_pb2.ZIPKIN
    assert list(good.trace_processes) == ["clover-server1", "x"]
    assert str(bad) == "zipkin span z1/b: timestamp 'soon' is not a whole number"
