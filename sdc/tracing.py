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

import re
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagators.b3 import B3MultiFormat
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from clover.config import Config
from sdc import topology


class SpanCounter(SpanProcessor):
    """Counts the spans handed to the exporter (Envoy's ``tracing.zipkin.spans_sent``)."""

    def __init__(self) -> None:
        self.ended = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


class GivenIds(IdGenerator):
    """Ids the caller gives for the next span it starts (``give``, then ``clear``); a span
    started without (a gRPC call's) gets random ones."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0
        self._random = RandomIdGenerator()

    def give(self, trace_id: int, span_id: int) -> None:
        self.trace_id, self.span_id = trace_id, span_id

    def clear(self) -> None:
        self.trace_id = self.span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id or self._random.generate_trace_id()

    def generate_span_id(self) -> int:
        return self.span_id or self._random.generate_span_id()


class Telemetry:
    """The tracer of one pod."""

    def __init__(self, cfg: Config, pod: str, schedule_delay_ms: float = 500, given_ids: GivenIds | None = None):
        """With ``given_ids``, spans take the ids set there and every span is recorded: the
        caller decided (nginx logged the ids and the sampling decision it sent downstream)."""
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
        sampler = ALWAYS_ON if given_ids else ParentBased(TraceIdRatioBased(cfg.sdc_trace_ratio))
        self.records_all = given_ids is not None
        self.id_generator = given_ids or RandomIdGenerator()
        self.provider = TracerProvider(resource=resource, sampler=sampler, id_generator=self.id_generator)
        exporter = OTLPSpanExporter(endpoint=f"{cfg.otlp_http_url}/v1/traces", timeout=5)
        self.counter = SpanCounter()
        self.provider.add_span_processor(self.counter)
        self.provider.add_span_processor(
            BatchSpanProcessor(exporter, max_queue_size=8192, schedule_delay_millis=schedule_delay_ms)
        )
        self.tracer = self.provider.get_tracer("clover.sdc")
        self.propagator = CompositePropagator([TraceContextTextMapPropagator(), B3MultiFormat()])

    def extract(self, headers: Mapping[str, Any]) -> Context:
        """The caller's context: read directly in the usual forms, else by the propagators."""
        parent = remote_parent(headers)
        if parent is None:
            return self.propagator.extract(headers)
        return trace.set_span_in_context(NonRecordingSpan(parent))

    def unsampled_child(self, headers: Mapping[str, str]) -> Span | None:
        """The span ``start`` would make for a request whose caller did not sample its trace (not
        recorded: the trace id and a new span id), without the propagators' and the sampler's work;
        None when that takes them (a sampled or a new trace, an unusual context)."""
        if self.records_all:
            return None
        trace_id = unsampled_trace_id(headers)
        if not trace_id:
            return None
        return NonRecordingSpan(SpanContext(trace_id, self.id_generator.generate_span_id(), False, TraceFlags(0)))

    def inject(self, carrier: MutableMapping[str, str], span: Span) -> None:
        self.propagator.inject(carrier, context=trace.set_span_in_context(span))

    def start(
        self,
        name: str,
        kind: SpanKind,
        parent: Context | Span | None = None,
        attributes: dict[str, str | int | bool] | None = None,
    ) -> Span:
        """A span tagged with this pod's node_id (attributes given at once: cheaper than one by one)."""
        context = trace.set_span_in_context(parent) if isinstance(parent, Span) else parent
        tags: dict[str, str | int | bool] = {"node_id": self.node_id, "component": "proxy"}
        if attributes:
            tags.update(attributes)
        return self.tracer.start_span(name, context=context, kind=kind, attributes=tags)

    def shutdown(self) -> None:
        self.provider.shutdown()


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
