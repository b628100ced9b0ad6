"""Each request counted once, through the whole real pipeline: the figures in Redis equal what the
test sent, whatever traced it.

* An application traced only by OpenTelemetry's standard instrumentation (tests/otel_app: HTTP
  server and client, gRPC server and client): its client spans are not requests, its gRPC
  service gets the same figures with the gRPC status deciding errors. Beside it, requests whose
  spans carry OpenTelemetry's body sizes (current and old names, and bad values) have exactly
  those bytes on their service and edge.
* The demo's traffic through the sample chain with both tracers on (the pods' own OpenTelemetry
  spans through Jaeger and the collector, and Clovisor on their veths): every service counts
  exactly the requests sent, from either source, and one URL is one key; the graph has exactly
  the chain's edges with those counts (Clovisor's also the load's own address -> the proxy).
* The graph after ``set lb -f lbv2.yaml`` (http-lb-v2 to clover-server4/5) with errors injected on
  clover-server2: its edges are the chain's new ones, and the 5xx are on http-lb -> clover-server2
  (and, answered back, on proxy -> http-lb), on no other edge.
* Debian's nginx, no tracer, in a network namespace the test makes, called 20 times from another:
  Clovisor alone makes it a node of the graph, its edge from the caller's address with exactly
  20 requests and the bytes the client sent and received.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, set_span_in_context
from opentelemetry.util.types import Attributes

from clover import keys
from clover.config import Config
from clovisor.cli import status_path
from clovisor.lab import Lab, start_nginx
from collector import client as collector
from sdc import grpc_client, load, topology
from stack.launcher import Launcher
from tests.e2e.collecting import collect_from_now, edge_counts, figures_of, requests_counted, url_counts
from tests.otel_app import Ports, run_app
from tests.otel_app.plan import GREETER_METHOD, GREETER_SERVICE
from tests.waiting import wait_until

pytestmark = pytest.mark.spark

PROXY, LB, IDS = "proxy-access-control", "http-lb", "snort-ids"
SERVERS = ("clover-server1", "clover-server2", "clover-server3")


@pytest.fixture(scope="module")
def visibility(stack: Launcher, cfg: Config, cassandra: Any) -> Iterator[Config]:
    stack.up(["visibility"], progress=lambda m: print(f"[counting] {m}"))
    yield cfg
    if collector.collector_status(cfg.collector_grpc).running:
        collector.stop_collector(cfg.collector_grpc)


# The body sizes of three requests shop -> uploads: 100 + 30 bytes sent, 2000 + 400 received; the third
# one's are not byte counts (its old name comes after the bad current one), so unknown.
SIZED_REQUESTS = (
    {"http.request.body.size": 100, "http.response.body.size": 2000},
    {"http.request_content_length": 30, "http.response_content_length": 400,
     "http.request_content_length_uncompressed": 999},
    {"http.request.body.size": -1, "http.response.body.size": 12.5, "http.request_content_length": 7},
)  # fmt: skip


def send_sized_requests(cfg: Config) -> None:
    """SIZED_REQUESTS as the OpenTelemetry SDK exports them: shop's client span, uploads' server span."""
    providers = [TracerProvider(resource=Resource.create({"service.name": name})) for name in ("shop", "uploads")]
    for provider in providers:
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{cfg.otlp_http_url}/v1/traces")))
    shop, uploads = (provider.get_tracer("clover-test") for provider in providers)
    attributes: Attributes = {"http.request.method": "POST", "url.path": "/upload", "http.response.status_code": 200}
    for sizes in SIZED_REQUESTS:
        with shop.start_as_current_span("POST", kind=SpanKind.CLIENT) as call:
            server = uploads.start_span("POST /upload", set_span_in_context(call), SpanKind.SERVER, attributes)
            server.set_attributes(sizes)
            server.end()
    for provider in providers:
        provider.shutdown()


def test_an_app_with_standard_instrumentation_counts_requests_not_calls(
    visibility: Config, store: redis.Redis, tmp_path: Path
) -> None:
    cfg = visibility
    names = ("frontend", "backend", "greeter")
    collect_from_now(cfg, store, (*names, "shop", "uploads"))
    send_sized_requests(cfg)
    offset = int(os.environ.get("CLOVER_TEST_PORT_OFFSET", "0"))
    expected = run_app(cfg.otlp_http_url, Ports.from_base(27280 + offset), tmp_path, count=20)
    sent = {name: expected.server[name].spans for name in names}
    assert sent == {"frontend": 20, "backend": 220, "greeter": 20}
    counted = {**sent, "uploads": len(SIZED_REQUESTS)}
    wait_until(lambda: requests_counted(store, counted, (None, "jaeger")), 240, 1.0, f"requests {counted} in Redis")
    uploads = figures_of(store, "uploads")
    assert (uploads["request_count"], uploads["request_bytes"], uploads["response_bytes"]) == ("3", "130", "2400")
    edge = json.loads(store.hget(keys.graph(), "shop -> uploads"))  # type: ignore[arg-type]  # redis-py: sync is typed as async
    assert (edge["request_count"], edge["request_bytes"], edge["response_bytes"]) == ("3", "130", "2400")
    for name in names:
        side = expected.server[name]
        published = figures_of(store, name)
        assert {k: published[k] for k in ("request_count", "errors", "errors_4xx", "errors_5xx", "source")} == {
            "request_count": str(side.spans), "errors": str(side.errors), "errors_4xx": str(side.errors_4xx),
            "errors_5xx": str(side.errors_5xx), "source": "jaeger",
        }, name  # fmt: skip
        assert published["error_rate"] == f"{side.errors / side.spans:.4f}", name
        assert not figures_of(store, name, "clovisor"), name
    assert figures_of(store, "greeter")["errors"] == "5"  # NOT_FOUND for one user in four: gRPC status, not HTTP
    assert url_counts(store, "backend") == dict(expected.server["backend"].urls)
    assert url_counts(store, "frontend") == dict(expected.server["frontend"].urls)
    assert url_counts(store, "greeter") == {f"/{GREETER_SERVICE}/{GREETER_METHOD}": 20}


@pytest.fixture(scope="module")
def chain(visibility: Config, stack: Launcher) -> Iterator[Config]:
    if os.geteuid() != 0:
        pytest.skip("Clovisor loads BPF programs: root only")
    stack.up(["sdc", "clovisor"], progress=lambda m: print(f"[counting] {m}"))
    yield visibility
    stack.down(["clovisor", "sdc"])


def test_the_demo_traffic_with_both_tracers_counts_each_request_once(chain: Config, store: redis.Redis) -> None:
    cfg = chain
    collect_from_now(cfg, store, (PROXY, LB, IDS, *SERVERS))
    rounds = 6
    base_url = f"http://{topology.pod_ip(cfg, PROXY)}:{topology.HTTP_PORT}"
    answers = asyncio.run(load.drive(base_url, 50.0, asyncio.Event(), count=rounds * len(load.MIX)))
    sent = rounds * len(load.MIX)
    assert sum(answers.values()) == sent and all(status.isdigit() for status in answers), answers
    per_url = Counter(v.path for v in load.MIX)
    expected = {PROXY: sent, LB: sent, IDS: sent}

    def all_counted() -> bool:
        server_total = sum(int(figures_of(store, s, "clovisor").get("request_count", 0)) for s in SERVERS)
        jaeger_total = sum(int(figures_of(store, s, "jaeger").get("request_count", 0)) for s in SERVERS)
        return requests_counted(store, expected, (None, "jaeger", "clovisor")) and server_total == jaeger_total == sent

    wait_until(all_counted, 300, 2.0, f"{sent} requests per hop from both sources")
    for service in (PROXY, LB, IDS):
        published = figures_of(store, service)
        assert (published["request_count"], published["source"]) == (str(sent), "jaeger"), service
        for source in ("jaeger", "clovisor"):
            assert figures_of(store, service, source)["request_count"] == str(sent), (service, source)
    for source in (None, "jaeger", "clovisor"):
        assert url_counts(store, PROXY, source) == {path: n * rounds for path, n in per_url.items()}, source
        assert url_counts(store, LB, source) == {path: n * rounds for path, n in per_url.items()}, source
        assert figures_of(store, PROXY, source)["errors_4xx"] == str(answers["404"]), source
    for server in SERVERS:
        assert (
            figures_of(store, server, "jaeger")["request_count"]
            == figures_of(store, server, "clovisor")["request_count"]
        ), server
    # The graph: the chain's edges, each request once; Clovisor also sees who called the proxy.
    per_server = {s: int(figures_of(store, s, "jaeger")["request_count"]) for s in SERVERS}
    edges = {f"{PROXY} -> {LB}": sent, f"{PROXY} -> {IDS}": sent, **{f"{LB} -> {s}": n for s, n in per_server.items()}}
    wait_until(lambda: edge_counts(store, "jaeger") == edges, 120, 2.0, f"the edges {edges}")
    network = edge_counts(store, "clovisor")
    load_edges = {edge: n for edge, n in network.items() if edge.endswith(f" -> {PROXY}")}
    assert list(load_edges.values()) == [sent], network
    assert {edge: n for edge, n in network.items() if edge not in load_edges} == edges
    assert edge_counts(store) == {**edges, **load_edges}


def clovisor_status(cfg: Config) -> dict[str, Any]:
    """What the running Clovisor last wrote to its status file; {} before it wrote one."""
    try:
        found: dict[str, Any] = json.loads(status_path(cfg).read_text())
    except (OSError, ValueError):
        return {}
    return found


def lb_body(lb: str, servers: tuple[str, ...]) -> dict[str, Any]:
    return {"server_port": "9180", "server_name": lb, "lb_name": f"{lb}.default", "lb_group": "cloverlb",
            "lb_path": "/", "lb_list": [{"url": f"{s}:9180"} for s in servers]}  # fmt: skip


def server_body(locations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"server_port": "9180", "server_name": "clover-server2", "locations": locations}


def test_the_graph_follows_the_load_balancers_and_shows_a_servers_errors_on_its_edge(
    chain: Config, store: redis.Redis
) -> None:
    cfg = chain
    servers = (*SERVERS, "clover-server4", "clover-server5")
    collect_from_now(cfg, store, (PROXY, LB, IDS, *servers))
    assert grpc_client.modify_lb(cfg, lb_body("http-lb-v2", servers[3:])) == "Modified nginx config"
    grpc_client.modify_server(cfg, server_body([{"uri_match": "/", "status": 503}]))
    try:
        sent = 6 * len(load.MIX)
        base_url = f"http://{topology.pod_ip(cfg, PROXY)}:{topology.HTTP_PORT}"
        answers = asyncio.run(load.drive(base_url, 50.0, asyncio.Event(), count=sent))
        assert sum(answers.values()) == sent and answers["503"] > 0, answers
        wait_until(lambda: requests_counted(store, {PROXY: sent, LB: sent, IDS: sent}, ("jaeger",)), 300, 2.0,
                   f"{sent} requests per hop")  # fmt: skip
        per_server = {s: int(figures_of(store, s, "jaeger").get("request_count", 0)) for s in servers}
        assert sum(per_server.values()) == sent and per_server["clover-server4"] > 0, per_server
        edges = {f"{PROXY} -> {LB}": sent, f"{PROXY} -> {IDS}": sent,
                 **{f"{LB} -> {s}": n for s, n in per_server.items() if n}}  # fmt: skip
        wait_until(lambda: edge_counts(store, "jaeger") == edges, 120, 2.0, f"the edges {edges}")
        published = {e: json.loads(v) for e, v in store.hgetall(keys.graph(source="jaeger")).items()}  # type: ignore[union-attr]
        failed = figures_of(store, "clover-server2", "jaeger")["errors_5xx"]
        assert int(failed) == answers["503"], answers
        assert {edge: figures["errors_5xx"] for edge, figures in published.items()} == {
            edge: failed if edge in (f"{LB} -> clover-server2", f"{PROXY} -> {LB}") else "0" for edge in edges
        }
    finally:
        grpc_client.modify_lb(cfg, lb_body("http-lb-v2", SERVERS))
        grpc_client.modify_server(cfg, server_body([]))


# 20 requests of growing size, each on its own connection, from a namespace Clovisor does not trace.
NGINX_CLIENT = """
import json, socket, sys
sent = received = 0
statuses = []
for i in range(20):
    head = f"GET /plain/{i} HTTP/1.1\\r\\nHost: nginx\\r\\nX-Pad: {'p' * i}\\r\\n"
    request = (head + "Connection: close\\r\\n\\r\\n").encode()
    with socket.create_connection((sys.argv[1], 80)) as s:
        s.sendall(request)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    sent, received = sent + len(request), received + len(answer)
    statuses.append(answer.split(b" ", 2)[1].decode())
print(json.dumps([sent, received, statuses]))
"""


def test_a_server_without_a_tracer_is_a_node_with_its_edge_and_bytes(
    chain: Config, store: redis.Redis, tmp_path: Path
) -> None:
    cfg = chain
    collect_from_now(cfg, store, ("nginx",))
    with Lab("cvn", "10.207.23.0/24") as lab:
        server = lab.add_pod("nginx", ports={"http": 80}, service="nginx")
        client = lab.add_pod("client")
        nginx = start_nginx(server, tmp_path)
        try:
            lab.register(cfg, server)
            wait_until(lambda: "default/nginx" in clovisor_status(cfg).get("pods", {}), 60, 0.5, "Clovisor on nginx")
            out = subprocess.run(client.exec(sys.executable, "-c", NGINX_CLIENT, server.ip), check=True,
                                 capture_output=True, text=True, timeout=60).stdout  # fmt: skip
            sent, received, statuses = json.loads(out)
            assert statuses == ["200"] * 20
            edge = f"{client.ip} -> nginx"
            wait_until(lambda: edge_counts(store, "clovisor") == {edge: 20}, 240, 2.0, f"the edge {edge}: 20 requests")
        finally:
            nginx.terminate()
            nginx.wait(10)
    assert edge_counts(store) == {edge: 20}
    published = json.loads(store.hget(keys.graph(), edge))  # type: ignore[arg-type]
    assert (published["source"], published["request_bytes"], published["response_bytes"]) == (
        "clovisor", str(sent), str(received),
    )  # fmt: skip
    assert published["status_codes"] == {"200": 20}
    assert figures_of(store, "nginx", "clovisor")["request_count"] == "20"
