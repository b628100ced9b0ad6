"""What the collector makes of an application traced by OpenTelemetry's standard instrumentation.

The test application (tests/otel_app: WSGI servers, the requests client, gRPC server and client)
exports to the stack's Jaeger; the spans are read back as the collector reads them (JaegerSource,
then convert.py) and compared with exactly what the requests made, once for each naming of the
HTTP attributes the instrumentation offers (OTEL_SEMCONV_STABILITY_OPT_IN): the old http.* /
net.* names (its default), the new url.* / server.* names, and both at once.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable

import pytest

from clover.config import Config
from collector.convert import MalformedSpan
from collector.sources import JaegerSource
from protos import records_pb2
from stack.launcher import Launcher
from tests.otel_app import Expected, Ports, run_app
from tests.otel_app.plan import BACKEND, FRONTEND, GREETER, GREETER_METHOD, GREETER_SERVICE, GRPC_NOT_FOUND
from tests.waiting import wait_until

REQUESTS = 20
PORTS = Ports.from_base(27180 + int(os.environ.get("CLOVER_TEST_PORT_OFFSET", "0")))
SERVER, CLIENT = records_pb2.SPAN_KIND_SERVER, records_pb2.SPAN_KIND_CLIENT
Span = records_pb2.Span


def collected_spans(source: JaegerSource, services: Iterable[str], start_us: int, end_us: int) -> list[Span]:
    """Every span of the services' traces in the window, read and deduplicated as the collector does."""
    spans: dict[tuple[str, str], Span] = {}
    for service in services:
        for item in source.spans(service, start_us, end_us):
            if isinstance(item, MalformedSpan):
                raise AssertionError(f"the collector could not convert a span: {item}")
            spans.setdefault((item.trace_id, item.span_id), item)
    return list(spans.values())


def is_grpc(span: Span) -> bool:
    return span.tags.get("rpc.system") == "grpc"


@pytest.fixture(scope="module", params=["", "http", "http/dup"], ids=["old-names", "new-names", "both-names"])
def traced(
    request: pytest.FixtureRequest, stack: Launcher, cfg: Config, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Expected, list[Span]]:
    """The app's spans as the collector converts them, and what the requests made."""
    logs = tmp_path_factory.mktemp("otel-app")
    start_us = int(time.time() * 1_000_000)
    expected = run_app(cfg.otlp_http_url, PORTS, logs, count=REQUESTS, semconv=request.param)
    end_us = int(time.time() * 1_000_000)
    source = JaegerSource(cfg.jaeger_url)
    names = sorted(expected.names.values())

    def all_spans() -> list[Span] | None:
        if not set(names) <= set(source.services()):
            return None
        spans = collected_spans(source, names, start_us, end_us)
        return spans if len(spans) >= expected.total_spans else None

    spans = wait_until(all_spans, timeout=120, what=f"Jaeger holding {expected.total_spans} spans")
    return expected, spans


def test_every_span_arrives_with_its_kind(traced: tuple[Expected, list[Span]]) -> None:
    expected, spans = traced
    by_kind = Counter((s.service, s.kind) for s in spans)
    wanted = {(name, SERVER): counts.spans for name, counts in expected.server.items() if counts.spans}
    wanted.update({(name, CLIENT): counts.spans for name, counts in expected.client.items() if counts.spans})
    frontend, backend, greeter = (expected.names[role] for role in (FRONTEND, BACKEND, GREETER))
    assert wanted == {
        (frontend, SERVER): REQUESTS,
        (frontend, CLIENT): 12 * REQUESTS,
        (backend, SERVER): 11 * REQUESTS,
        (greeter, SERVER): REQUESTS,
    }
    assert by_kind == wanted
    assert len({s.trace_id for s in spans}) == expected.requests == REQUESTS
    assert all(s.tags["span.kind"] == ("server" if s.kind == SERVER else "client") for s in spans)


def test_each_server_span_is_the_child_of_its_callers_client_span(traced: tuple[Expected, list[Span]]) -> None:
    expected, spans = traced
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    frontend = expected.names[FRONTEND]
    parents: Counter[tuple[object, ...]] = Counter()
    for span in spans:
        parent = by_id.get((span.trace_id, span.parent_span_id))
        parents[(span.service, span.kind, parent and (parent.service, parent.kind))] += 1
    assert parents == {
        (frontend, SERVER, None): REQUESTS,
        (frontend, CLIENT, (frontend, SERVER)): 12 * REQUESTS,
        (expected.names[BACKEND], SERVER, (frontend, CLIENT)): 11 * REQUESTS,
        (expected.names[GREETER], SERVER, (frontend, CLIENT)): REQUESTS,
    }


def test_http_spans_carry_their_status_and_no_grpc_status(traced: tuple[Expected, list[Span]]) -> None:
    expected, spans = traced
    http = [s for s in spans if not is_grpc(s)]
    assert all(s.HasField("http_status_code") and not s.HasField("grpc_status_code") for s in http)
    assert all(s.http_method == "GET" for s in http)
    statuses = Counter((s.service, s.kind, s.http_status_code) for s in http)
    wanted = Counter()
    for kind, sides in ((SERVER, expected.server), (CLIENT, expected.client)):
        for name, counts in sides.items():
            wanted.update({(name, kind, code): n for code, n in counts.http_status.items()})
    assert statuses == wanted
    frontend, backend = expected.names[FRONTEND], expected.names[BACKEND]
    assert expected.server[backend].errors_4xx == expected.server[backend].errors_5xx == REQUESTS
    assert expected.server[frontend].errors_4xx == REQUESTS // 4


def test_grpc_spans_carry_the_grpc_status(traced: tuple[Expected, list[Span]]) -> None:
    expected, spans = traced
    grpc_spans = [s for s in spans if is_grpc(s)]
    assert all(s.HasField("grpc_status_code") and not s.HasField("http_status_code") for s in grpc_spans)
    assert all(s.operation_name == f"/{GREETER_SERVICE}/{GREETER_METHOD}" for s in grpc_spans)
    assert all((s.http_method, s.http_url, s.http_host) == ("", "", "") for s in grpc_spans)
    frontend, greeter = expected.names[FRONTEND], expected.names[GREETER]
    codes = Counter((s.service, s.kind, s.grpc_status_code) for s in grpc_spans)
    wanted = {(greeter, SERVER, code): n for code, n in expected.server[greeter].grpc_status.items()}
    wanted.update({(frontend, CLIENT, code): n for code, n in expected.client[frontend].grpc_status.items()})
    assert codes == wanted
    ghosts = REQUESTS // 4
    assert wanted == {
        (greeter, SERVER, 0): REQUESTS - ghosts,
        (greeter, SERVER, GRPC_NOT_FOUND): ghosts,
        (frontend, CLIENT, 0): REQUESTS - ghosts,
        (frontend, CLIENT, GRPC_NOT_FOUND): ghosts,
    }
    assert expected.server[greeter].grpc_errors == expected.client[frontend].grpc_errors == ghosts


def test_server_spans_name_the_path_and_the_client_spans_the_whole_url(traced: tuple[Expected, list[Span]]) -> None:
    """The same request: path?query on the callee's server span, http://host:port/path?query on the
    caller's client span; the host is the callee's address on both."""
    expected, spans = traced
    backend = expected.names[BACKEND]
    backend_address = expected.addresses[backend]
    http = [s for s in spans if not is_grpc(s)]
    server_urls = Counter((s.service, s.http_url) for s in http if s.kind == SERVER)
    wanted = Counter()
    for name, counts in expected.server.items():
        wanted.update({(name, target): n for target, n in counts.urls.items()})
    assert server_urls == wanted
    client_urls = Counter(s.http_url for s in http if s.kind == CLIENT)
    assert client_urls == {
        f"http://{backend_address}{t}": n for t, n in expected.client[expected.names[FRONTEND]].urls.items()
    }
    assert client_urls[f"http://{backend_address}/items?id=3"] == server_urls[(backend, "/items?id=3")] == REQUESTS
    hosts = Counter((s.service, s.kind, s.http_host) for s in http)
    assert hosts == {
        (name, SERVER, expected.addresses[name]): counts.spans
        for name, counts in expected.server.items()
        if counts.http_spans
    } | {(expected.names[FRONTEND], CLIENT, backend_address): 11 * REQUESTS}
