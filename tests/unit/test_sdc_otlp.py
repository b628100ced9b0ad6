"""The chain's spans: written as the OpenTelemetry SDK writes them, sampled as it samples, sent
in batches to a real HTTP listener, and counted when the backend refuses them."""

from __future__ import annotations

import copy
import dataclasses
import http.server
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from clover.config import Config
from sdc import otlp, topology
from sdc.otlp import SpanEncoder, SpanSender
from sdc.tracing import SCOPE, RecordedSpan, Telemetry

pytestmark = pytest.mark.unit

TRACE = 0x0AF7651916CD43DD8448EB211C80319C
CALLER = 0xB7AD6B7169203331
RESOURCE = {"service.name": "clover-server1", "k8s.pod.name": "clover-server1", "host.ip": "10.244.0.12"}
TAGS: dict[str, str | int | bool | float] = {
    "node_id": "sidecar~10.244.0.12~clover-server1.default~default.svc.cluster.local",
    "http.url": "http://clover-server1:9180/a?b=ü",
    "request_size": "0",
    "error": True,
    "retries": -3,
    "weight": 0.25,
}


class Kept(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


class Next(IdGenerator):
    def __init__(self) -> None:
        self.ids: list[tuple[int, int]] = []

    def generate_trace_id(self) -> int:
        return self.ids[0][0]

    def generate_span_id(self) -> int:
        return self.ids.pop(0)[1]


class Recorder:
    """Spans the sender would send, kept."""

    def __init__(self) -> None:
        self.spans: list[RecordedSpan] = []

    def add(self, span: RecordedSpan) -> None:
        self.spans.append(span)


def sdk_spans() -> list[ReadableSpan]:
    ids, kept = Next(), Kept()
    provider = TracerProvider(resource=Resource.create(RESOURCE), sampler=ALWAYS_ON, id_generator=ids)
    provider.add_span_processor(kept)
    tracer = provider.get_tracer(SCOPE)
    caller = NonRecordingSpan(SpanContext(TRACE, CALLER, True, TraceFlags(1)))
    ids.ids = [(TRACE, 0x1111), (TRACE, 0x2222), (0x5, 0x3333)]
    server = tracer.start_span("s:9180/*", trace.set_span_in_context(caller), SpanKind.SERVER, TAGS, start_time=10)
    client = tracer.start_span("c:80/*", trace.set_span_in_context(server), SpanKind.CLIENT, {"a": "b"}, start_time=11)
    client.set_status(Status(StatusCode.ERROR, "HTTP 503"))
    client.end(20)
    server.set_attributes({"http.status_code": "200"})
    server.end(30)
    root = tracer.start_span("grpc", None, SpanKind.SERVER, None, start_time=40)
    root.set_status(StatusCode.OK)
    root.set_status(StatusCode.ERROR, "too late")
    root.end(50)
    return kept.spans


def our_spans() -> list[RecordedSpan]:
    sent = Recorder()
    caller = SpanContext(TRACE, CALLER, True, TraceFlags(1))

    def context(trace_id: int, span_id: int) -> SpanContext:
        return SpanContext(trace_id, span_id, False, TraceFlags(1))

    made = []
    for name, kind, ctx, parent, tags, start in [
        ("s:9180/*", SpanKind.SERVER, context(TRACE, 0x1111), caller, dict(TAGS), 10),
        ("c:80/*", SpanKind.CLIENT, context(TRACE, 0x2222), context(TRACE, 0x1111), {"a": "b"}, 11),
        ("grpc", SpanKind.SERVER, context(0x5, 0x3333), None, {}, 40),
    ]:
        made.append(RecordedSpan(sent, name, kind, ctx, parent, tags, start))  # type: ignore[arg-type]
    server, client, root = made
    client.set_status(Status(StatusCode.ERROR, "HTTP 503"))
    client.end(20)
    server.set_attributes({"http.status_code": "200"})
    server.end(30)
    root.set_status(StatusCode.OK)
    root.set_status(StatusCode.ERROR, "too late")
    root.end(50)
    return sent.spans


def test_spans_are_written_as_the_sdk_writes_them() -> None:
    ours = ExportTraceServiceRequest.FromString(
        SpanEncoder(dict(Resource.create(RESOURCE).attributes), SCOPE).request(our_spans())  # type: ignore[arg-type]
    )
    theirs = encode_spans(sdk_spans())
    assert len(ours.resource_spans[0].scope_spans[0].spans) == 3
    assert ours == theirs


def test_an_ended_span_changes_no_more_and_is_sent_once() -> None:
    spans = our_spans()
    server = spans[1]
    server.set_attributes({"late": "1"})
    server.set_attribute("later", "1")
    server.update_name("renamed")
    server.end(99)
    assert (server.name, server.end_ns, "late" in server.attributes, server.is_recording()) == (
        "s:9180/*",
        30,
        False,
        False,
    )
    assert [s.name for s in spans] == ["c:80/*", "s:9180/*", "grpc"]


@pytest.fixture
def cfg() -> Config:
    return dataclasses.replace(Config.from_env(), sdc_trace_ratio=0.25, otlp_http_url="http://127.0.0.1:9")


def test_spans_are_sampled_as_the_sdks_parent_based_ratio_sampler_samples_them(cfg: Config) -> None:
    tel = Telemetry(cfg, "clover-server1", schedule_delay_ms=60_000)
    sdk = ParentBased(TraceIdRatioBased(0.25))
    trace_ids = [(i * 0x9E3779B97F4A7C15) % (1 << 128) or 1 for i in range(1, 400)]
    ours = [tel.start("s", SpanKind.SERVER, ids=(t, 7)).is_recording() for t in trace_ids]
    theirs = [sdk.should_sample(None, t, "s").decision.is_sampled() for t in trace_ids]
    assert ours == theirs
    assert 60 < sum(ours) < 140
    for flags in (0, 1):
        parent = NonRecordingSpan(SpanContext(TRACE, CALLER, True, TraceFlags(flags)))
        child = tel.start("s", SpanKind.SERVER, trace.set_span_in_context(parent))
        ctx = child.get_span_context()
        assert (ctx.trace_id, ctx.trace_flags, child.is_recording()) == (TRACE, flags, bool(flags))
        assert ctx.span_id not in (0, CALLER)
    tel.shutdown()


def test_the_pods_resource_names_the_pod_and_keeps_the_users_attributes_but_not_the_sdks(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=lab")
    tel = Telemetry(cfg, "clover-server1", schedule_delay_ms=60_000)
    assert tel.resource == {
        "service.name": "clover-server1", "service.instance.id": "clover-server1", "service.version": "v1",
        "k8s.pod.name": "clover-server1", "k8s.namespace.name": "default",
        "host.ip": topology.pod_ip(cfg, "clover-server1"), "deployment.environment": "lab",
    }  # fmt: skip
    tel.shutdown()


class Backend(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []
    answer = 200

    def do_POST(self) -> None:  # http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).bodies.append(body)
        self.send_response(type(self).answer)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # http.server's name
        pass


@pytest.fixture
def backend() -> Iterator[tuple[type[Backend], str]]:
    handler = type("Handler", (Backend,), {"bodies": [], "answer": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    server.shutdown()
    server.server_close()


def spans_in(bodies: list[bytes]) -> list[str]:
    names = []
    for body in bodies:
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
            names += [s.name for ss in rs.scope_spans for s in ss.spans]
    return names


def test_a_full_batch_is_sent_at_once_and_the_rest_on_shutdown(
    backend: tuple[type[Backend], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, url = backend
    monkeypatch.setattr(otlp, "BATCH_SPANS", 4)
    sender = SpanSender(url, SpanEncoder(RESOURCE, SCOPE), delay=60)
    template = our_spans()[0]

    def add(i: int) -> None:
        span = copy.copy(template)
        span.name = f"s{i}"
        sender.add(span)

    for i in range(4):
        add(i)
    for _ in range(200):
        if handler.bodies:
            break
        threading.Event().wait(0.01)
    assert spans_in(handler.bodies) == ["s0", "s1", "s2", "s3"]
    add(4)
    add(5)
    sender.shutdown()
    assert spans_in(handler.bodies[:1]) == ["s0", "s1", "s2", "s3"]
    assert spans_in(handler.bodies) == [f"s{i}" for i in range(6)]
    assert (sender.ended, sender.dropped) == (6, 0)


def test_a_batch_the_backend_refuses_twice_is_counted_as_dropped(backend: tuple[type[Backend], str]) -> None:
    handler, url = backend
    handler.answer = 503
    sender = SpanSender(url, SpanEncoder(RESOURCE, SCOPE), delay=60)
    for span in our_spans():
        sender.add(span)
    sender.shutdown()
    assert (len(handler.bodies), sender.ended, sender.dropped) == (2, 3, 3)


def test_spans_beyond_the_queue_are_counted_as_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otlp, "QUEUE_SPANS", 2)
    sender = SpanSender("http://127.0.0.1:9/v1/traces", SpanEncoder(RESOURCE, SCOPE), delay=60)
    for span in our_spans():
        sender.add(span)
    assert (sender.ended, sender.dropped) == (3, 1)
    sender.shutdown()  # nothing listens there: the two it held are dropped too
    assert (sender.ended, sender.dropped) == (3, 3)
