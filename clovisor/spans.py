"""From a traced exchange to the Span record every producer writes to Kafka (source CLOVISOR).

Trace context comes from the request when it carries one (W3C ``traceparent``, B3 single or
multi headers): Clovisor's span joins that trace as a child of the caller's span. Otherwise
it starts a trace of its own. Tags keep the original Clovisor's names (``reqmethod``,
``requrl``, ``respstatuscode``, ``reqpakcount`` ...) beside the conventional ``http.*`` ones.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from clovisor import _spanwire, records
from clovisor.records import Exchange
from protos import records_pb2


@dataclass(frozen=True)
class PodInfo:
    """What the span says about the traced pod."""

    name: str
    namespace: str
    service: str
    node: str


class Clock:
    """Turns the kernel's monotonic nanoseconds into wall-clock microseconds."""

    def __init__(self) -> None:
        self.offset_ns = time.time_ns() - time.monotonic_ns()

    def epoch_us(self, mono_ns: int) -> int:
        return (mono_ns + self.offset_ns) // 1000


_HEX = frozenset("0123456789abcdef")


def _hex_id(text: str, length: int) -> str | None:
    """A non-zero hex id padded to ``length`` digits (64-bit B3 trace ids become 128-bit)."""
    t = text.strip().lower()
    if not t or len(t) > length or not _HEX.issuperset(t) or int(t, 16) == 0:
        return None
    return t.rjust(length, "0")


def trace_context(ex: Exchange) -> tuple[str | None, str | None]:
    """(trace id, parent span id) from the request's headers, 32 and 16 hex digits; an invalid
    trace id voids the whole header."""
    trace_id, parent = _trace_context(ex)
    return (trace_id, parent) if trace_id else (None, None)


def _trace_context(ex: Exchange) -> tuple[str | None, str | None]:
    if ex.trace_context:
        if ex.flags & records.XF_TP_IS_B3:
            parts = ex.trace_context.split("-")
            if len(parts) >= 2:
                return _hex_id(parts[0], 32), _hex_id(parts[1], 16)
        else:
            parts = ex.trace_context.split("-")
            if len(parts) >= 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
                return _hex_id(parts[1], 32), _hex_id(parts[2], 16)
    if ex.b3_trace_id:
        return _hex_id(ex.b3_trace_id, 32), _hex_id(ex.b3_span_id, 16) if ex.b3_span_id else None
    return None, None


def operation_name(ex: Exchange) -> str:
    if ex.kind == records.REC_TCP:
        return f"tcp {ex.server_port}"
    path = ex.url.split("?", 1)[0] or "/"
    return f"{ex.method} {path}"


def _connection_part(ex: Exchange, pod: PodInfo) -> records_pb2.Span:
    """The fields and tags every span of one connection shares."""
    tags = {
        "component": "clovisor",
        "direction": "outbound" if ex.egress else "inbound",
        "nodename": pod.node,
        "podname": pod.name,
        "namespace": pod.namespace,
        "srcip": ex.client_ip,
        "dstip": ex.server_ip,
        "srcport": str(ex.client_port),
        "dstport": str(ex.server_port),
        "protocol-0": "IPv4",
        "protocol-1": "TCP",
        "session": ex.session_key,
    }
    if ex.kind != records.REC_TCP:
        tags["protocol-2"] = "HTTP"
    span = records_pb2.Span(
        service=pod.service,
        node_id=pod.node,
        source=records_pb2.CLOVISOR,
        # The pod answered an inbound exchange, and made an outbound one.
        kind=records_pb2.SPAN_KIND_CLIENT if ex.egress else records_pb2.SPAN_KIND_SERVER,
        src_ip=ex.client_ip,
        dst_ip=ex.server_ip,
        src_port=ex.client_port,
        dst_port=ex.server_port,
    )
    _set_tags(span, tags)
    return span


def _exchange_part(ex: Exchange, clock: Clock, extra: dict[str, str] | None) -> records_pb2.Span:
    """The fields and tags of one exchange (or one TCP connection); ``extra`` tags win."""
    trace_id, parent = trace_context(ex)
    duration_us = max(0, (ex.resp_end_ns - ex.req_start_ns) // 1000)
    tags = {
        "reqpakcount": str(ex.req_packets),
        "reqbytecount": str(ex.req_bytes),
        "resppakcount": str(ex.resp_packets),
        "respbytecount": str(ex.resp_bytes),
        "duration": f"{duration_us} usec",
    }
    span = records_pb2.Span(
        trace_id=trace_id or os.urandom(16).hex(),
        span_id=os.urandom(8).hex(),
        parent_span_id=parent or "",
        operation_name=operation_name(ex),
        start_time_us=clock.epoch_us(ex.req_start_ns),
        duration_us=duration_us,
        request_size=ex.req_size,
        response_size=ex.resp_size,
    )
    if ex.kind != records.REC_TCP:
        span.http_method = ex.method
        span.http_url = ex.url
        span.http_host = ex.host
        span.user_agent = ex.user_agent
        tags["reqmethod"] = ex.method
        tags["requrl"] = ex.url
        tags["reqproto"] = ex.req_version
        tags["useragent"] = ex.user_agent
        tags["host"] = ex.host
        tags["requestid"] = ex.request_id
        if ex.envoy_decorator:
            tags["envoydecorator"] = ex.envoy_decorator
        if trace_id:
            tags["traceid"] = trace_id
        if ex.kind == records.REC_EXCHANGE:
            span.http_status_code = ex.status
            tags["respstatus"] = ex.reason
            tags["respstatuscode"] = str(ex.status)
            tags["respproto"] = ex.resp_version
            if ex.resp_start_ns and ex.req_end_ns:
                tags["server.latency_us"] = str(max(0, (ex.resp_start_ns - ex.req_end_ns) // 1000))
            if ex.content_type:
                tags["content-type"] = ex.content_type
            if ex.status >= 500:
                tags["error"] = "true"
        else:
            tags["error"] = "true"
            tags["clovisor.incomplete"] = "connection closed before the response ended"
        if ex.flags & records.XF_URL_TRUNC:
            tags["clovisor.url_truncated"] = "true"
        if ex.flags & records.XF_CHUNKED:
            tags["http.chunked"] = "true"
    if extra:
        tags.update(extra)
    _set_tags(span, tags)
    return span


def _set_tags(span: records_pb2.Span, tags: dict[str, str]) -> None:
    span_tags = span.tags
    for key, value in tags.items():
        if value != "":
            span_tags[key] = value


def to_span(ex: Exchange, pod: PodInfo, clock: Clock, extra: dict[str, str] | None = None) -> records_pb2.Span:
    """The Kafka record for one exchange (or one TCP connection)."""
    span = _connection_part(ex, pod)
    span.MergeFrom(_exchange_part(ex, clock, extra))
    return span


class SpanEncoder:
    """Serialized spans (the Kafka key and value) of exchange records, as ``to_span`` defines them.

    The part every span of a connection shares is serialized once per connection: a serialized
    message followed by another one parses as their merge. The exchange's part comes from
    ``clovisor/spanwire.c`` (``compiled``), or else from ``_exchange_part``."""

    def __init__(self, clock: Clock, connections: int = 4096, compiled: bool = True) -> None:
        self.clock = clock
        self.connections = connections
        self._shared: dict[bytes, tuple[PodInfo, int, bytes]] = {}
        self._encode_exchange = _spanwire.encode_exchange if compiled else None

    @property
    def compiled(self) -> bool:
        return self._encode_exchange is not None

    def encode(self, rec: memoryview, pod: PodInfo, extra: dict[str, str] | None = None) -> tuple[bytes, bytes]:
        """``rec``: an exchange record (kind 1-3) from the ring buffer."""
        if self._encode_exchange is not None:
            trace_id, part = self._encode_exchange(rec, self.clock.offset_ns, extra)
        else:
            span = _exchange_part(records.decode_exchange(rec), self.clock, extra)
            trace_id, part = span.trace_id.encode(), span.SerializeToString()
        # What the shared part depends on besides the connection: the pod, and the record's
        # egress flag and whether it is a TCP record (a connection's are the same unless the pod's
        # configuration changed in between).
        variant = (rec[records.FLAGS_OFFSET] & records.XF_EGRESS) | (rec[0] == records.REC_TCP) << 1
        connection = rec[records.CONNECTION_BYTES].tobytes()
        cached = self._shared.get(connection)
        if cached is None or cached[0] is not pod or cached[1] != variant:
            if len(self._shared) >= self.connections:
                self._shared.clear()
            cached = (pod, variant, _connection_part(records.decode_exchange(rec), pod).SerializeToString())
            self._shared[connection] = cached
        return trace_id, cached[2] + part
