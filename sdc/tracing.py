"""OpenTelemetry spans for the chain, tagged the way Istio's Envoy tagged them.

Each pod exports over OTLP/HTTP to the configured trace backend. Context travels in both W3C
``traceparent`` and B3 (``x-b3-*``, what Istio propagates) headers, so one trace spans
proxy -> lb -> server and the IDS mirror. Span tags are the ones the collector maps to
Cassandra columns (docs/compatibility.md §1b): ``node_id``, ``http.url``, ``user_agent``, ``request_size``,
``response_size``, ``http.status_code``, ``upstream_cluster`` (strings, as Envoy sends them),
plus ``http.method``, ``http.protocol``, ``guid:x-request-id``, ``peer.address`` and
``component``.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.b3 import B3MultiFormat
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from clover.config import Config
from sdc import topology
from sdc.otlp import AttributeValue, SpanEncoder, SpanSender

SCOPE = "clover.sdc"
TRACE_ID_LIMIT = (1 << 64) - 1
OTLP_KIND = {kind: kind.value + 1 for kind in SpanKind}  # OTLP numbers the kinds from 1 (0 is unspecified)


class RecordedSpan(Span):
    """A sampled span of the chain: its ids, times, tags and status, sent once ended. The SDK's
    span does the same with locks, limits, events and per-processor hooks the chain does not use
    (29-48 µs to make and end one, against 5: ``bench/sdc/spans.py``)."""

    def __init__(self, sender: SpanSender, name: str, kind: SpanKind, context: SpanContext, parent: SpanContext | None,
                 attributes: dict[str, AttributeValue], start_ns: int | None):  # fmt: skip
        self.sender = sender
        self.name = name
        self.kind = OTLP_KIND[kind]
        self.context = context
        self.trace_id = context.trace_id
        self.span_id = context.span_id
        self.parent_id = parent.span_id if parent is not None else 0
        self.parent_remote = parent is not None and parent.is_remote
        self.attributes = attributes
        self.start_ns = start_ns or time.time_ns()
        self.end_ns = 0
        self.status_code = 0
        self.status_message = ""

    def get_span_context(self) -> SpanContext:
        return self.context

    def is_recording(self) -> bool:
        return not self.end_ns

    def set_attribute(self, key: str, value: AttributeValue) -> None:  # type: ignore[override]
        if not self.end_ns:
            self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:  # type: ignore[override]
        if not self.end_ns:
            self.attributes.update(attributes)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """As the SDK does: an OK status is final; a description is kept only with ERROR."""
        if self.end_ns or self.status_code == StatusCode.OK.value:
            return
        code = status.status_code if isinstance(status, Status) else status
        if isinstance(status, Status):
            description = status.description
        self.status_code = code.value
        self.status_message = (description or "") if code is StatusCode.ERROR else ""

    def update_name(self, name: str) -> None:
        if not self.end_ns:
            self.name = name

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        raise NotImplementedError("the chain's spans carry no events")

    def record_exception(self, exception: BaseException, attributes: Attributes = None, timestamp: int | None = None,
                         escaped: bool = False) -> None:  # fmt: skip
        raise NotImplementedError("the chain's spans carry no events")

    def end(self, end_time: int | None = None) -> None:
        if not self.end_ns:
            self.end_ns = end_time or time.time_ns()
            self.sender.add(self)


def random_id(bits: int) -> int:
    return random.getrandbits(bits) or 1


class Telemetry:
    """The tracer of one pod."""

    def __init__(self, cfg: Config, pod: str, schedule_delay_ms: float = 500, records_all: bool = False):
        """With ``records_all``, every span is recorded: the caller decided (nginx logged the ids
        and the sampling decision it sent downstream)."""
        spec = topology.spec(pod)
        self.pod = pod
        self.service = spec.service
        self.node_id = topology.node_id(cfg, pod)
        resource = Resource.create(
            {
                "service.name": spec.service,
                "service.instance.id": pod,
                "service.version": spec.version or "v1",
                "k8s.pod.name": pod,
                "k8s.namespace.name": topology.NAMESPACE,
                "host.ip": topology.pod_ip(cfg, pod),
            }
        )
        # Not telemetry.sdk.*: the SDK does not make these spans, and Jaeger's Badger indexes every
        # tag of every span (3 of 21 cost 17% of its CPU a span: bench/sdc/jaeger_tags.py).
        self.resource: dict[str, AttributeValue] = {
            k: str(v) for k, v in resource.attributes.items() if not k.startswith("telemetry.sdk.")
        }
        self.records_all = records_all
        self.sample_below = round(cfg.sdc_trace_ratio * (TRACE_ID_LIMIT + 1))
        encoder = SpanEncoder(self.resource, SCOPE)
        self.sender = SpanSender(f"{cfg.otlp_http_url}/v1/traces", encoder, schedule_delay_ms / 1000)
        self.propagator = CompositePropagator([TraceContextTextMapPropagator(), B3MultiFormat()])

    def extract(self, headers: Mapping[str, Any]) -> Context:
        """The caller's context: read directly in the usual forms, else by the propagators."""
        parent = remote_parent(headers)
        if parent is None:
            return self.propagator.extract(headers)
        return trace.set_span_in_context(NonRecordingSpan(parent))

    def unsampled_child(self, headers: Mapping[str, str]) -> Span | None:
        """The span ``start`` would make for a request whose caller did not sample its trace (not
        recorded: the trace id and a new span id), without the propagators' work; None when that
        takes them (a sampled or a new trace, an unusual context)."""
        if self.records_all:
            return None
        trace_id = unsampled_trace_id(headers)
        if not trace_id:
            return None
        return NonRecordingSpan(SpanContext(trace_id, random_id(64), False, TraceFlags(0)))

    def inject(self, carrier: MutableMapping[str, str], span: Span) -> None:
        self.propagator.inject(carrier, context=trace.set_span_in_context(span))

    def start(
        self,
        name: str,
        kind: SpanKind,
        parent: Context | Span | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
        start_ns: int | None = None,
        ids: tuple[int, int] | None = None,
    ) -> Span:
        """A span tagged with this pod's node_id, child of ``parent``; ``ids`` (trace, span) are
        ones the caller made. Sampled as the SDK's ``ParentBased(TraceIdRatioBased)`` would: as
        the parent was, else by the trace id; every span when ``records_all``."""
        parent_span = parent if isinstance(parent, Span) else trace.get_current_span(parent)
        parent_ctx: SpanContext | None = parent_span.get_span_context()
        if parent_ctx is None or not parent_ctx.is_valid:
            parent_ctx = None
        if ids is not None:
            trace_id, span_id = ids
        else:
            trace_id, span_id = parent_ctx.trace_id if parent_ctx else random_id(128), random_id(64)
        if self.records_all:
            sampled = True
        elif parent_ctx is not None:
            sampled = parent_ctx.trace_flags.sampled
        else:
            sampled = trace_id & TRACE_ID_LIMIT < self.sample_below
        context = SpanContext(trace_id, span_id, False, TraceFlags(TraceFlags.SAMPLED if sampled else 0),
                              parent_ctx.trace_state if parent_ctx else None)  # fmt: skip
        if not sampled:
            return NonRecordingSpan(context)
        tags: dict[str, AttributeValue] = {"node_id": self.node_id, "component": "proxy"}
        if attributes:
            tags.update(attributes)
        return RecordedSpan(self.sender, name, kind, context, parent_ctx, tags, start_ns)

    def shutdown(self) -> None:
        self.sender.shutdown()


_W3C_PARENT = re.compile(r"[ \t]*00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})[ \t]*")
_B3_TRACE_ID = re.compile(r"[\da-fA-F]{16}|[\da-fA-F]{32}")
_B3_SPAN_ID = re.compile(r"[\da-fA-F]{16}")
_B3_SAMPLED = frozenset({"1", "True", "true", "d"})


def remote_parent(headers: Mapping[str, str]) -> SpanContext | None:
    """The caller's span context as the pod's propagators would find it, for the usual forms:
    multi-header B3 when both its ids are there (it wins), else a version-00 W3C ``traceparent``
    without ``tracestate``; None for the rest (absent, or a form left to the propagators)."""
    if "b3" in headers:
        return None
    b3_trace, b3_span = headers.get("x-b3-traceid"), headers.get("x-b3-spanid")
    if b3_trace and b3_span and _B3_TRACE_ID.fullmatch(b3_trace) and _B3_SPAN_ID.fullmatch(b3_span):
        if not int(b3_span, 16):
            return None
        sampled = headers.get("x-b3-sampled") in _B3_SAMPLED or headers.get("x-b3-flags") == "1"
        return SpanContext(int(b3_trace, 16), int(b3_span, 16), True, TraceFlags(TraceFlags.SAMPLED if sampled else 0))
    found = _W3C_PARENT.fullmatch(headers.get("traceparent", ""))
    if found is None or not int(found.group(2), 16) or not int(found.group(1), 16) or "tracestate" in headers:
        return None
    return SpanContext(int(found.group(1), 16), int(found.group(2), 16), True, TraceFlags(int(found.group(3), 16)))


def unsampled_trace_id(headers: Mapping[str, str]) -> int:
    """The trace id of the caller's context when ``remote_parent`` finds it not sampled; else 0."""
    parent = remote_parent(headers)
    return parent.trace_id if parent is not None and not parent.trace_flags.sampled else 0


def operation_name(fqdn: str, port: int) -> str:
    """Envoy's route decorator as Istio 1.0 named spans, e.g. ``http-lb.default.svc.cluster.local:9180/*``."""
    return f"{fqdn}:{port}/*"


def http_tags(
    *,
    url: str,
    method: str,
    user_agent: str,
    request_size: int,
    upstream_cluster: str,
    request_id: str,
    peer: str,
) -> dict[str, str | int | bool]:
    """The HTTP tags of a span, as Envoy sets them."""
    return {
        "http.url": url,
        "http.method": method,
        "http.protocol": "HTTP/1.1",
        "user_agent": user_agent or "-",
        "request_size": str(request_size),
        "upstream_cluster": upstream_cluster,
        "guid:x-request-id": request_id,
        "peer.address": peer,
    }


def finish(span: Span, status: int, response_size: int, error: str | None = None, end_time: int | None = None) -> None:
    if span.is_recording():
        tags: dict[str, str | bool] = {"http.status_code": str(status), "response_size": str(response_size)}
        if error or status >= 500:
            span.set_status(Status(StatusCode.ERROR, error or f"HTTP {status}"))
            tags["error"] = True
        span.set_attributes(tags)
    span.end(end_time)


def traceresponse(span: Span) -> str | None:
    """The W3C ``traceresponse`` header value naming this span (None when it is not sampled)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
