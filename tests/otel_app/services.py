"""The test application's services, one per process, traced only by OpenTelemetry's standard
instrumentation (WSGI server, requests client, gRPC server and client), exporting OTLP/HTTP to
``CLOVER_OTLP_HTTP_URL``.

    python -m tests.otel_app.services frontend NAME PORT --backend URL --greeter HOST:PORT
    python -m tests.otel_app.services backend NAME PORT
    python -m tests.otel_app.services greeter NAME PORT

SIGTERM stops the server, then exports every span still queued; the process exits 0 only when
every span was exported.
``OTEL_SEMCONV_STABILITY_OPT_IN`` (``http``, ``http/dup``) picks the HTTP attribute names.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any
from urllib.parse import parse_qs

import grpc
import requests
import waitress
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient, GrpcInstrumentorServer
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from clover.config import Config
from tests.otel_app.plan import BACKEND_CALLS, GREETER_METHOD, GREETER_SERVICE, known

HOST = "127.0.0.1"
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
REASONS = {200: "OK", 404: "Not Found", 500: "Internal Server Error", 502: "Bad Gateway"}


class CheckedExporter(SpanExporter):
    """The OTLP/HTTP exporter, counting the spans it failed to export."""

    def __init__(self, url: str):
        self.inner = OTLPSpanExporter(endpoint=f"{url}/v1/traces", timeout=10)
        self.lost = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        if result != SpanExportResult.SUCCESS:
            self.lost += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def tracer_provider(service: str, exporter: SpanExporter) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=65536, schedule_delay_millis=200))
    trace.set_tracer_provider(provider)
    return provider


def respond(start_response: StartResponse, status: int, body: bytes) -> list[bytes]:
    start_response(f"{status} {REASONS[status]}", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def backend_app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/items":
        return respond(start_response, 200, f"items {environ.get('QUERY_STRING', '')}".encode())
    if path == "/fail":
        return respond(start_response, 500, b"failed on purpose")
    return respond(start_response, 404, b"no such page")


def frontend_app(backend_url: str, greeter: str) -> WsgiApp:
    """For GET /hello?user=U: every backend call of the plan, then SayHello(U) on the greeter."""
    say_hello = grpc.insecure_channel(greeter).unary_unary(f"/{GREETER_SERVICE}/{GREETER_METHOD}")

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        if environ.get("PATH_INFO") != "/hello":
            return respond(start_response, 404, b"no such page")
        user = parse_qs(environ.get("QUERY_STRING", "")).get("user", [""])[0]
        with requests.Session() as session:
            for target, _ in BACKEND_CALLS:
                session.get(f"{backend_url}{target}", timeout=10)
        try:
            greeting = say_hello(user.encode(), timeout=10)
        except grpc.RpcError as exc:
            status = 404 if exc.code() == grpc.StatusCode.NOT_FOUND else 502
            return respond(start_response, status, f"greeter: {exc.code()}".encode())
        return respond(start_response, 200, greeting)

    return app


def say_hello(request: bytes, context: grpc.ServicerContext) -> bytes:
    user = request.decode()
    if not known(user):
        context.abort(grpc.StatusCode.NOT_FOUND, f"no user {user!r}")
    return f"hello {user}".encode()


def _raise_system_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve_http(app: WsgiApp, port: int) -> None:
    """Serve until SIGTERM (waitress stops its loop on SystemExit)."""
    signal.signal(signal.SIGTERM, _raise_system_exit)
    server = waitress.create_server(OpenTelemetryMiddleware(app), host=HOST, port=port, threads=4)
    server.run()


def serve_greeter(port: int) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    GrpcInstrumentorServer().instrument()
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    handlers = {GREETER_METHOD: grpc.unary_unary_rpc_method_handler(say_hello)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(GREETER_SERVICE, handlers),))
    if server.add_insecure_port(f"{HOST}:{port}") != port:
        raise SystemExit(f"greeter: cannot listen on {HOST}:{port}")
    server.start()
    stop.wait()
    server.stop(grace=5).wait(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.otel_app.services")
    parser.add_argument("role", choices=("frontend", "backend", "greeter"))
    parser.add_argument("service", help="service.name of the spans")
    parser.add_argument("port", type=int)
    parser.add_argument("--backend", help="the backend's base URL (frontend only)")
    parser.add_argument("--greeter", help="the greeter's host:port (frontend only)")
    args = parser.parse_args(argv)
    exporter = CheckedExporter(Config.from_env().otlp_http_url)
    provider = tracer_provider(args.service, exporter)
    try:
        if args.role == "greeter":
            serve_greeter(args.port)
        elif args.role == "backend":
            serve_http(backend_app, args.port)
        else:
            if not args.backend or not args.greeter:
                parser.error("frontend needs --backend and --greeter")
            RequestsInstrumentor().instrument()
            GrpcInstrumentorClient().instrument()
            serve_http(frontend_app(args.backend, args.greeter), args.port)
    finally:
        provider.shutdown()
    if exporter.lost:
        raise SystemExit(f"{args.service}: {exporter.lost} spans were not exported")


if __name__ == "__main__":
    main()
