"""Backend JSON -> Span records: the original's tag mapping, optional columns, malformed spans."""

from __future__ import annotations

from typing import Any

import pytest

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


def converted(tags: dict[str, Any]) -> records_pb2.Span:
    """The record of a Jaeger span with these tags (Jaeger gives ints as int64, the rest as text)."""
    typed = [{"key": k, "type": "int64" if isinstance(v, int) else "string", "value": v} for k, v in tags.items()]
    _, span = list(jaeger_trace_spans(jaeger_trace(tags=typed)))
    assert isinstance(span, records_pb2.Span)
    return span


# Tags exactly as OpenTelemetry's standard Python instrumentation 0.66b2 sends them to Jaeger (tests/otel_app):
# waitress + opentelemetry-instrumentation-wsgi, requests + -requests, grpcio + -grpc. The WSGI server names
# the Host header, port included, in http.host, net.host.name and server.address; the gRPC server span's
# net.peer.* is the caller's socket; the gRPC client span names no address at all.
UA = "python-requests/2.34.2"
WSGI_OLD = {"span.kind": "server", "http.method": "GET", "http.scheme": "http", "http.host": "127.0.0.1:27581",
            "http.server_name": "waitress.invalid", "http.target": "/items?id=2", "http.flavor": "1.1",
            "http.user_agent": UA, "net.host.name": "127.0.0.1:27581", "net.host.port": 27581,
            "net.peer.ip": "127.0.0.1", "net.peer.port": 50370, "http.status_code": 200}  # fmt: skip
WSGI_NEW = {"span.kind": "server", "http.request.method": "GET", "url.scheme": "http", "url.path": "/fail",
            "url.query": "mode=boom", "server.address": "127.0.0.1:27581", "server.port": 27581,
            "client.address": "127.0.0.1", "client.port": 50790, "network.protocol.version": "1.1",
            "user_agent.original": UA, "http.response.status_code": 500, "error.type": "500"}  # fmt: skip
WSGI_NEW_NO_QUERY = {**WSGI_NEW, "url.path": "/missing", "url.query": "", "http.response.status_code": 404}
REQUESTS_OLD = {"span.kind": "client", "http.method": "GET", "http.url": "http://127.0.0.1:27581/items?id=3",
                "http.status_code": 404, "user_agent.original": UA}  # fmt: skip
REQUESTS_NEW = {"span.kind": "client", "http.request.method": "GET", "url.full": "http://127.0.0.1:27581/items?id=3",
                "server.address": "127.0.0.1", "server.port": 27581, "network.peer.address": "127.0.0.1",
                "network.peer.port": 27581, "network.protocol.version": "1.1", "http.response.status_code": 404,
                "user_agent.original": UA}  # fmt: skip
# OTEL_SEMCONV_STABILITY_OPT_IN=http/dup: both names; the client's http.host has no port.
REQUESTS_DUP = {**REQUESTS_NEW, **REQUESTS_OLD, "http.host": "127.0.0.1", "net.peer.port": 27581}
GRPC_SERVER = {"span.kind": "server", "rpc.system": "grpc", "rpc.service": "clover.test.Greeter",
               "rpc.method": "SayHello", "rpc.grpc.status_code": 5, "net.peer.ip": "127.0.0.1",
               "net.peer.name": "localhost", "net.peer.port": "48070",
               "rpc.user_agent": "grpc-python/1.85.3 grpc-c/58.0.0 (linux; chttp2)"}  # fmt: skip
GRPC_CLIENT = {"span.kind": "client", "rpc.system": "grpc", "rpc.service": "clover.test.Greeter",
               "rpc.method": "SayHello", "rpc.grpc.status_code": 0}  # fmt: skip
SERVER, CLIENT = records_pb2.SPAN_KIND_SERVER, records_pb2.SPAN_KIND_CLIENT


@pytest.mark.parametrize(
    ("tags", "kind", "method", "url", "host", "user_agent"),
    [
        (WSGI_OLD, SERVER, "GET", "/items?id=2", "127.0.0.1:27581", UA),
        (WSGI_NEW, SERVER, "GET", "/fail?mode=boom", "127.0.0.1:27581", UA),
        (WSGI_NEW_NO_QUERY, SERVER, "GET", "/missing", "127.0.0.1:27581", UA),
        (REQUESTS_OLD, CLIENT, "GET", "http://127.0.0.1:27581/items?id=3", "127.0.0.1:27581", UA),
        (REQUESTS_NEW, CLIENT, "GET", "http://127.0.0.1:27581/items?id=3", "127.0.0.1:27581", UA),
        (REQUESTS_DUP, CLIENT, "GET", "http://127.0.0.1:27581/items?id=3", "127.0.0.1:27581", UA),
        (GRPC_SERVER, SERVER, "", "", "", ""),
        (GRPC_CLIENT, CLIENT, "", "", "", ""),
    ],
    ids=[
        "wsgi-old",
        "wsgi-new",
        "wsgi-new-no-query",
        "requests-old",
        "requests-new",
        "requests-dup",
        "grpc-server",
        "grpc-client",
    ],
)
def test_standard_instrumentation_spans_map_by_kind(
    tags: dict[str, Any], kind: int, method: str, url: str, host: str, user_agent: str
) -> None:
    span = converted(tags)
    assert (span.kind, span.http_method, span.http_url, span.http_host) == (kind, method, url, host)
    assert span.user_agent == user_agent


@pytest.mark.parametrize(
    ("tags", "http_status", "grpc_status"),
    [
        (WSGI_OLD, 200, None),
        (WSGI_NEW, 500, None),
        (REQUESTS_DUP, 404, None),
        (GRPC_SERVER, None, 5),
        (GRPC_CLIENT, None, 0),
    ],
)
def test_http_and_grpc_statuses_are_kept_apart(
    tags: dict[str, Any], http_status: int | None, grpc_status: int | None
) -> None:
    span = converted(tags)
    assert (span.http_status_code if span.HasField("http_status_code") else None) == http_status
    assert (span.grpc_status_code if span.HasField("grpc_status_code") else None) == grpc_status


@pytest.mark.parametrize(
    ("tags", "host"),
    [
        # Older client instrumentations name the server in net.peer.*; a server span's net.* are its own address
        # (net.host.*) and the caller's (net.peer.*), so only net.host.* names the server there.
        ({"span.kind": "client", "net.peer.name": "backend", "net.peer.port": 8080}, "backend:8080"),
        ({"span.kind": "server", "net.peer.name": "frontend", "net.peer.port": 41000}, ""),
        (
            {"span.kind": "server", "net.host.name": "backend", "net.host.port": 8080, "net.peer.name": "x"},
            "backend:8080",
        ),
        ({"span.kind": "client", "net.host.name": "frontend", "net.peer.name": "backend"}, "backend"),
        # Without a kind the first pair present counts.
        ({"net.host.name": "a", "net.peer.name": "b", "net.peer.port": 1}, "a"),
        ({"span.kind": "client", "server.address": "::1", "server.port": 8080}, "[::1]:8080"),
        ({"span.kind": "client", "server.address": "[::1]:8080", "server.port": 8080}, "[::1]:8080"),
        ({"span.kind": "client", "server.address": "::1"}, "::1"),
    ],
)
def test_the_host_comes_from_the_servers_side_of_the_span(tags: dict[str, Any], host: str) -> None:
    assert converted(tags).http_host == host


def sizes(span: records_pb2.Span) -> tuple[int | None, int | None]:
    request = span.request_size if span.HasField("request_size") else None
    return request, span.response_size if span.HasField("response_size") else None


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"http.request.body.size": 17, "http.response.body.size": 3495}, (17, 3495)),
        ({"http.request_content_length": 18, "http.response_content_length": 3496}, (18, 3496)),
        # Zipkin and OTLP-to-Jaeger give every value as text; a double that is a whole number counts.
        ({"http.request.body.size": "0", "http.response.body.size": "4096.0"}, (0, 4096)),
        ({"http.response.body.size": 2**63 - 1}, (None, 2**63 - 1)),
        # The original's tags first, then the current names, then the old ones.
        ({"request_size": "5", "http.request.body.size": 6, "http.request_content_length": 7}, (5, None)),
        ({"http.response.body.size": 6, "http.response_content_length": 7}, (None, 6)),
        ({"request_size": "", "http.request_content_length": 7}, (7, None)),
        # Not the size on the wire.
        ({"http.request_content_length_uncompressed": 900}, (None, None)),
    ],
)
def test_body_sizes_come_from_the_original_tags_or_opentelemetrys(
    tags: dict[str, Any], expected: tuple[int | None, int | None]
) -> None:
    assert sizes(converted(tags)) == expected


@pytest.mark.parametrize("bad", ["-1", -5, "12.5", "lots", "nan", "inf", "1e30", "true"])
def test_a_size_that_is_not_a_byte_count_is_unknown_and_the_span_kept(bad: Any) -> None:
    """The first name present decides: a bad value there is unknown, not replaced by a later name."""
    span = converted({"http.request.body.size": bad, "http.request_content_length": 9, "response_size": bad,
                      "http.response.body.size": 10, "http.status_code": 200})  # fmt: skip
    assert sizes(span) == (None, None)
    assert (span.span_id, span.http_status_code) == ("s2", 200)


@pytest.mark.parametrize("bad", ["inf", "1e10", "-2147483649", "ok"])
def test_a_status_out_of_range_is_unknown_and_the_span_kept(bad: str) -> None:
    span = converted({"http.status_code": bad, "rpc.grpc.status_code": bad, "response_size": 3})
    assert not span.HasField("http_status_code") and not span.HasField("grpc_status_code")
    assert sizes(span) == (None, 3)
