"""Clovisor's spans in the stack's real Jaeger, as root: with ``clovisor_jaeger_collector`` set in
Redis they go to its Thrift HTTP endpoint (CLOVER_JAEGER_THRIFT_PORT), with
``clovisor_jaeger_agent`` to its UDP Thrift compact receiver (CLOVER_JAEGER_AGENT_PORT), as the
original's jaeger-agent took them. Each is read back by trace id from Jaeger's query API and
compared with the same span from Kafka.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Iterator

import pytest
import requests

from clover import keys
from clover.config import Config
from tests.integration.clovisor_support import call_from_pod, egress_traced, read_response, request, serving, wait_until

pytestmark = [
    pytest.mark.bpf,
    pytest.mark.skipif(os.geteuid() != 0, reason="loading BPF programs and making namespaces needs root"),
]

PORT = 8280
SERVER, CLIENT = 1, 2  # records_pb2.SPAN_KIND_SERVER, SPAN_KIND_CLIENT


@pytest.fixture(scope="module")
def lab(cfg: Config) -> Iterator[object]:
    from clovisor.lab import Lab

    with Lab("cvp", "10.207.22.0/24") as lab:
        web = lab.add_pod("jweb", ports={"http": PORT}, service="jweb-svc")
        caller = lab.add_pod("jcall", service="jcall-svc")
        with serving(cfg, lab, [(web, (sys.executable, "-m", "clovisor.lab", "serve", str(PORT)))]):
            lab.register(cfg, caller)
            yield lab


def jaeger_span(cfg: Config, trace_id: str, span_id: str) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """The span ``span_id`` of trace ``trace_id`` from Jaeger's query API, and its process."""

    def find() -> tuple[dict, dict] | None:  # type: ignore[type-arg]
        reply = requests.get(f"{cfg.jaeger_url}/api/traces/{trace_id}", timeout=5)
        if reply.status_code != 200:
            return None
        for trace in reply.json()["data"] or []:
            for span in trace["spans"]:
                if span["spanID"] == span_id:
                    return span, trace["processes"][span["processID"]]
        return None

    return wait_until(find, 20, f"span {span_id} of trace {trace_id} in Jaeger")  # type: ignore[no-any-return]


@pytest.mark.parametrize("setting", [keys.CLOVISOR_JAEGER_COLLECTOR, keys.CLOVISOR_JAEGER_AGENT])
def test_spans_reach_jaeger_with_their_trace_service_operation_kind_and_tags(
    agent, lab, redis_client, spans, cfg: Config, setting: str
) -> None:
    """a: a request joining a caller's trace (W3C traceparent); b: one without (a trace of its
    own); c: one from another traced pod (egress match), whose CLIENT span joins the same trace."""
    web, caller = lab.pods["jweb"], lab.pods["jcall"]
    port = cfg.jaeger_thrift_port if setting == keys.CLOVISOR_JAEGER_COLLECTOR else cfg.jaeger_agent_port
    target = f"{'collector' if setting == keys.CLOVISOR_JAEGER_COLLECTOR else 'agent'} 127.0.0.1:{port}"
    m = uuid.uuid4().hex[:12]
    parents = {key: (os.urandom(16).hex(), os.urandom(8).hex()) for key in "ac"}
    redis_client.set(setting, f"127.0.0.1:{port}")
    try:
        wait_until(lambda: agent.jaeger is not None and agent.jaeger.target == target, 10, "the Jaeger exporter")
        with socket.create_connection((web.ip, PORT)) as sock, sock.makefile("rb") as f:
            sock.sendall(request("GET", f"/bytes/10?m={m}&k=a", {"traceparent": "00-{}-{}-01".format(*parents["a"])}))
            assert read_response(f)[0] == 200
            sock.sendall(request("GET", f"/status/503?m={m}&k=b", {"User-Agent": "cvp-jaeger/1"}))
            assert read_response(f)[0] == 503
        with egress_traced(agent, redis_client, caller, web.ip, PORT):
            headers = {"traceparent": "00-{}-{}-01".format(*parents["c"]), "Connection": "close"}
            reply = call_from_pod(caller, web.ip, PORT, request("GET", f"/bytes/5?m={m}&k=c", headers))
            assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
            found = {(s.http_url[-1], s.kind): s for s in spans.collect(m, 4)}
        wait_until(lambda: agent.jaeger.stats.delivered == 4, 10, "4 spans sent to Jaeger")
        assert (agent.jaeger.stats.produced, agent.jaeger.stats.dropped, agent.jaeger.stats.errors) == (4, 0, 0)
    finally:
        redis_client.delete(setting)
    wait_until(lambda: agent.jaeger is None, 10, "the Jaeger exporter gone")
    assert sorted(found) == [("a", SERVER), ("b", SERVER), ("c", SERVER), ("c", CLIENT)]
    assert [found[k, SERVER].trace_id for k in "ac"] == [parents["a"][0], parents["c"][0]]
    assert found["c", CLIENT].trace_id == parents["c"][0]
    for (key, kind), span in found.items():
        assert (span.http_host, span.service) == ("lab", "jweb-svc" if kind == SERVER else "jcall-svc")
        got, process = jaeger_span(cfg, span.trace_id, span.span_id)
        assert process["serviceName"] == span.service
        assert {t["key"]: t["value"] for t in process["tags"]}["client-uuid"] == "clovisor"
        trace_id, parent = parents.get(key, (span.trace_id, ""))
        references = [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": parent}] if parent else []
        assert (got["traceID"], got["operationName"], got["references"]) == (
            trace_id,
            span.operation_name,
            references,
        )
        assert (got["startTime"], got["duration"]) == (span.start_time_us, span.duration_us)
        kind_tag = "server" if kind == SERVER else "client"
        assert {t["key"]: t["value"] for t in got["tags"]} == {**span.tags, "span.kind": kind_tag}
    operations = {key: found[key, SERVER].operation_name for key in "abc"}
    assert operations == {"a": "GET /bytes/10", "b": "GET /status/503", "c": "GET /bytes/5"}
    assert (found["b", SERVER].tags["respstatuscode"], found["b", SERVER].tags["error"]) == ("503", "true")
