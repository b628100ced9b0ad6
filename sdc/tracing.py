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
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
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
        self.provider = TracerProvider(resource=resource, sampler=sampler, id_generator=given_ids)
        exporter = OTLPSpanExporter(endpoint=f"{cfg.otlp_http_url}/v1/traces", timeout=5)
        self.counter = SpanCounter()
        self.provider.add_span_processor(self.counter)
        self.provider.add_span_processor(
            BatchSpanProcessor(exporter, max_queue_size=8192, schedule_delay_millis=schedule_delay_ms)
        )
        self.tracer = self.provider.get_tracer("clover.sdc")
        self.propagator = CompositePropagator([TraceContextTextMapPropagator(), B3MultiFormat()])

    def extract(self, headers: Mapping[str, Any]) -> Context:
        return self.propagator.extract(headers)

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
