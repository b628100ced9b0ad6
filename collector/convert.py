"""Turning the trace backends' JSON into Span records.

Jaeger's query API returns traces as ``{traceID, spans: [...], processes: {pid: {serviceName}}}``;
Zipkin's v2 API returns each trace as a list of spans with ``localEndpoint.serviceName``. Tags
map to the columns the original wrote (docs/compatibility.md §1b); a span missing any of them is kept with those
fields empty. A span without ids, or with a start time or duration that is not a whole number,
cannot be stored and raises MalformedSpan.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from protos import records_pb2

# Tag names the collector maps to Span fields: the original's names first, then OpenTelemetry's.
URL_TAGS = ("http.url", "url.full", "http.target")
STATUS_TAGS = ("http.status_code", "http.response.status_code")
USER_AGENT_TAGS = ("user_agent", "http.user_agent", "user_agent.original")
METHOD_TAGS = ("http.method", "http.request.method")
GRPC_STATUS_TAGS = ("rpc.grpc.status_code",)
HOST_TAGS = ("http.host",)
# Body sizes in bytes: the original's tag, OpenTelemetry's current name, its older one. Not
# http.request_content_length_uncompressed: that is not the size on the wire.
SIZE_TAGS = {
    "request_size": ("request_size", "http.request.body.size", "http.request_content_length"),
    "response_size": ("response_size", "http.response.body.size", "http.response_content_length"),
}
INT64_MAX = 2**63 - 1
# (host, port) tag pairs naming the server of a request: OpenTelemetry's current names, then the older ones.
# The older ones depend on the side: net.host.* is the span's own end and net.peer.* the other, so the
# server is net.host.* on a server span and net.peer.* on a client span (on a server span net.peer.* is the
# caller, e.g. on the gRPC instrumentation's server spans).
ADDRESS_TAGS = (
    ("server.address", "server.port"),
    ("net.host.name", "net.host.port"),
    ("net.peer.name", "net.peer.port"),
)
ADDRESS_TAGS_BY_KIND = {
    records_pb2.SPAN_KIND_SERVER: ADDRESS_TAGS[:2],
    records_pb2.SPAN_KIND_CLIENT: (ADDRESS_TAGS[0], ADDRESS_TAGS[2]),
}
NO_UPSTREAM_CLUSTER = "none"

SPAN_KINDS = {
    "server": records_pb2.SPAN_KIND_SERVER,
    "client": records_pb2.SPAN_KIND_CLIENT,
    "producer": records_pb2.SPAN_KIND_PRODUCER,
    "consumer": records_pb2.SPAN_KIND_CONSUMER,
    "internal": records_pb2.SPAN_KIND_INTERNAL,
}
# Envoy (Istio) names the cluster of a span: inbound|... on the callee's side, outbound|... on the caller's.
ENVOY_CLUSTER_KINDS = (("inbound|", records_pb2.SPAN_KIND_SERVER), ("outbound|", records_pb2.SPAN_KIND_CLIENT))


class MalformedSpan(ValueError):
    """A span from the backend that cannot be stored; the message names the span and the field."""


def _first(tags: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in tags and tags[name] != "":
            return tags[name]
    return None


def span_kind(declared: str | None, upstream_cluster: str | None) -> records_pb2.SpanKind:
    """The span's kind: as the tracer declared it (Jaeger's ``span.kind`` tag, Zipkin's ``kind``),
    else from Envoy's ``upstream_cluster``; unspecified when neither says."""
    kind = SPAN_KINDS.get((declared or "").strip().lower())
    if kind is not None:
        return kind
    for prefix, envoy_kind in ENVOY_CLUSTER_KINDS:
        if (upstream_cluster or "").startswith(prefix):
            return envoy_kind
    return records_pb2.SPAN_KIND_UNSPECIFIED


def request_url(tags: Mapping[str, str]) -> str:
    """The request's URL as the span gives it: a full URL or target, else OpenTelemetry's
    ``url.path`` with ``url.query``."""
    url = _first(tags, URL_TAGS)
    if url is not None:
        return url
    path = tags.get("url.path", "")
    query = tags.get("url.query", "")
    return f"{path}?{query}" if path and query else path


def _has_port(host: str) -> bool:
    name, colon, port = host.rpartition(":")
    return bool(colon) and port.isdigit() and (name.endswith("]") or ":" not in name)


def _host_port(name: str, port: str) -> str:
    """``name:port``; a name that already carries a port (the WSGI instrumentation puts the Host
    header in server.address / net.host.name) is kept as it is, an IPv6 address is bracketed."""
    if not port or _has_port(name):
        return name
    return f"[{name}]:{port}" if ":" in name and not name.startswith("[") else f"{name}:{port}"


def request_host(
    tags: Mapping[str, str], url: str, kind: records_pb2.SpanKind = records_pb2.SPAN_KIND_UNSPECIFIED
) -> str:
    """The host the request was sent to: the authority of an absolute URL, a Host tag, or the
    server address (with its port) of OpenTelemetry's semantic conventions for the span's ``kind``."""
    if "://" in url:
        try:
            authority = urlsplit(url).netloc
        except ValueError:
            authority = ""
        if authority:
            return authority.rpartition("@")[2]
    host = _first(tags, HOST_TAGS)
    if host is not None:
        return host
    for name_tag, port_tag in ADDRESS_TAGS_BY_KIND.get(kind, ADDRESS_TAGS):
        name = tags.get(name_tag, "")
        if name:
            return _host_port(name, tags.get(port_tag, ""))
    return ""


def _whole_number(value: Any, field: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MalformedSpan(f"{where}: {field} {value!r} is not a whole number")
    try:
        return int(value)
    except ValueError:
        raise MalformedSpan(f"{where}: {field} {value!r} is not a whole number") from None


def _optional_int(value: str | None) -> int | None:
    """A status code (int32), else unknown."""
    if value is None:
        return None
    try:
        number = int(float(value))
    except (ValueError, OverflowError):
        return None
    return number if -(2**31) <= number < 2**31 else None


def _size(value: str | None) -> int | None:
    """A byte count: a whole number from 0 to int64's maximum ("4096.0" included), else unknown."""
    if value is None:
        return None
    try:
        size = int(value)
    except ValueError:
        try:
            number = float(value)
        except ValueError:
            return None
        if not number.is_integer():  # also nan and inf
            return None
        size = int(number)
    return size if 0 <= size <= INT64_MAX else None


def _ids(raw: Mapping[str, Any], trace_key: str, span_key: str, where: str) -> tuple[str, str]:
    trace_id, span_id = raw.get(trace_key), raw.get(span_key)
    if not isinstance(trace_id, str) or not trace_id:
        raise MalformedSpan(f"{where}: missing {trace_key}")
    if not isinstance(span_id, str) or not span_id:
        raise MalformedSpan(f"{where}: missing {span_key}")
    return trace_id, span_id


def build_span(
    *,
    trace_id: str,
    span_id: str,
    parent_id: str,
    service: str,
    operation: str,
    start_us: int,
    duration_us: int,
    tags: Mapping[str, str],
    source: records_pb2.Source,
    processes: list[str],
    process_id: str = "",
    kind: str | None = None,
) -> records_pb2.Span:
    """A Span record with the mapped tag fields filled in; ``kind`` is the tracer's own span kind
    when it is not a tag (Zipkin)."""
    url = request_url(tags)
    upstream_cluster = tags.get("upstream_cluster") or NO_UPSTREAM_CLUSTER
    span_kind_value = span_kind(kind or tags.get("span.kind"), upstream_cluster)
    span = records_pb2.Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_id,
        service=service,
        operation_name=operation,
        start_time_us=start_us,
        duration_us=duration_us,
        http_method=_first(tags, METHOD_TAGS) or "",
        http_url=url,
        http_host=request_host(tags, url, span_kind_value),
        user_agent=_first(tags, USER_AGENT_TAGS) or "",
        upstream_cluster=upstream_cluster,
        kind=span_kind_value,
        node_id=tags.get("node_id", ""),
        source=source,
        trace_processes=processes,
        process_id=process_id,
        tags=dict(tags),
    )
    status = _optional_int(_first(tags, STATUS_TAGS))
    if status is not None:
        span.http_status_code = status
    grpc_status = _optional_int(_first(tags, GRPC_STATUS_TAGS))
    if grpc_status is not None:
        span.grpc_status_code = grpc_status
    for field, names in SIZE_TAGS.items():
        size = _size(_first(tags, names))
        if size is not None:
            setattr(span, field, size)
    return span


def _tag_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def jaeger_trace_spans(trace: Mapping[str, Any]) -> Iterator[records_pb2.Span | MalformedSpan]:
    """Every span of one Jaeger trace, as a record or as the MalformedSpan explaining why not."""
    processes = trace.get("processes") or {}
    services = [p.get("serviceName", "") for p in processes.values() if isinstance(p, dict)]
    for raw in trace.get("spans") or []:
        where = f"jaeger span {raw.get('traceID', '?')}/{raw.get('spanID', '?')}"
        try:
            trace_id, span_id = _ids(raw, "traceID", "spanID", where)
            start_us = _whole_number(raw.get("startTime"), "startTime", where)
            duration_us = _whole_number(raw.get("duration"), "duration", where)
            tags = {t["key"]: _tag_text(t.get("value", "")) for t in raw.get("tags") or [] if "key" in t}
            parent = next(
                (r.get("spanID", "") for r in raw.get("references") or [] if r.get("refType") == "CHILD_OF"), ""
            )
            process_id = raw.get("processID", "")
            service = (processes.get(process_id) or {}).get("serviceName", "")
            yield build_span(
                trace_id=trace_id,
                span_id=span_id,
                parent_id=parent,
                service=service,
                operation=raw.get("operationName", ""),
                start_us=start_us,
                duration_us=duration_us,
                tags=tags,
                source=records_pb2.JAEGER,
                processes=services,
                process_id=process_id,
            )
        except MalformedSpan as exc:
            yield exc
        except (TypeError, AttributeError, KeyError) as exc:
            yield MalformedSpan(f"{where}: unexpected shape ({type(exc).__name__}: {exc})")


def zipkin_trace_spans(trace: list[Mapping[str, Any]]) -> Iterator[records_pb2.Span | MalformedSpan]:
    """Every span of one Zipkin v2 trace (a list of spans)."""
    services = sorted(
        {(s.get("localEndpoint") or {}).get("serviceName", "") for s in trace if isinstance(s, dict)} - {""}
    )
    for raw in trace:
        where = f"zipkin span {raw.get('traceId', '?')}/{raw.get('id', '?')}"
        try:
            trace_id, span_id = _ids(raw, "traceId", "id", where)
            start_us = _whole_number(raw.get("timestamp"), "timestamp", where)
            duration_us = _whole_number(raw.get("duration", 0), "duration", where)
            tags = {k: _tag_text(v) for k, v in (raw.get("tags") or {}).items()}
            yield build_span(
                trace_id=trace_id,
                span_id=span_id,
                parent_id=raw.get("parentId", ""),
                service=(raw.get("localEndpoint") or {}).get("serviceName", ""),
                operation=raw.get("name", ""),
                start_us=start_us,
                duration_us=duration_us,
                tags=tags,
                source=records_pb2.ZIPKIN,
                processes=services,
                kind=raw.get("kind"),
            )
        except MalformedSpan as exc:
            yield exc
        except (TypeError, AttributeError) as exc:
            yield MalformedSpan(f"{where}: unexpected shape ({type(exc).__name__}: {exc})")
