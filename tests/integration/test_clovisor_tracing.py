"""Clovisor end to end, as root: real BPF programs on the veths of pods the test makes, a real
Redis for its settings, a real Kafka for its spans.

The lab: a bridge (the node's CNI bridge) and pods in network namespaces serving the lab's
HTTP paths. The client runs in the root namespace, so its requests reach a pod through the
pod's host-side veth, as traffic from another node would.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from clover import keys
from clover.config import Config
from tests.integration.clovisor_support import read_response, request, serving, wait_until

pytestmark = [
    pytest.mark.bpf,
    pytest.mark.skipif(os.geteuid() != 0, reason="loading BPF programs and making namespaces needs root"),
]

PLUGIN = '''
class Parser:
    """Adds the value of the X-Tenant request header as the field `tenant`."""

    def parse(self, session_key, is_req, data):
        if not is_req:
            return b"", {}
        for line in data.split(b"\\r\\n"):
            if line.lower().startswith(b"x-tenant:"):
                return b"", {"tenant": line.split(b":", 1)[1].strip().decode(), "plugin.session": session_key}
        return b"", {}
'''


@pytest.fixture(scope="module")
def lab(cfg: Config) -> Iterator[object]:
    from clovisor.lab import Lab

    with Lab("cvt", "10.207.20.0/24") as lab:
        web = lab.add_pod("web", ports={"http": 8080}, labels={"app": "web"}, service="web-svc")
        api = lab.add_pod("api", ports={"http-api": 8081}, labels={"app": "api"}, service="api-svc")
        other = lab.add_pod("other", ports={"http": 8082}, labels={"app": "other"}, namespace="elsewhere")
        servers = [
            (p, (sys.executable, "-m", "clovisor.lab", "serve", str(port)))
            for p, port in ((web, 8080), (api, 8081), (other, 8082))
        ]
        with serving(cfg, lab, servers):
            yield lab


def test_keep_alive_requests_give_one_span_each_with_method_url_status_agent_and_sizes(agent, lab, spans) -> None:
    web = lab.pods["web"]
    marker = uuid.uuid4().hex[:12]
    latencies = []
    with socket.create_connection((web.ip, 8080)) as sock:
        f = sock.makefile("rb")
        for i in range(20):
            started = time.monotonic_ns()
            sock.sendall(request("GET", f"/bytes/{100 + i}?m={marker}&i={i}", {"User-Agent": "clovisor-test/1"}))
            status, body = read_response(f)
            latencies.append((time.monotonic_ns() - started) // 1000)
            assert status == 200 and len(body) == 100 + i
    found = spans.collect(marker, 20)
    assert len(found) == 20
    by_index = {int(s.http_url.rsplit("=", 1)[1]): s for s in found}
    assert sorted(by_index) == list(range(20))
    for i, span in by_index.items():
        assert span.http_method == "GET"
        assert span.http_url == f"/bytes/{100 + i}?m={marker}&i={i}"
        assert span.http_status_code == 200
        assert span.user_agent == "clovisor-test/1"
        assert span.service == "web-svc"
        assert span.source == 3  # CLOVISOR
        assert span.dst_ip == web.ip and span.dst_port == 8080 and span.src_ip == lab.gateway
        request_bytes = len(request("GET", span.http_url, {"User-Agent": "clovisor-test/1"}))
        assert span.request_size == request_bytes
        head = "HTTP/1.1 200 OK\r\nServer: clovisor-lab\r\nContent-Type: text/plain\r\n"
        assert span.response_size == len(head) + len(f"Content-Length: {100 + i}\r\n\r\n") + 100 + i
        assert 0 < span.duration_us <= latencies[i]
        assert span.tags["reqmethod"] == "GET" and span.tags["respstatuscode"] == "200"
        assert span.tags["podname"] == "web" and span.tags["nodename"] == "test-node"


def test_new_connection_per_request_and_error_statuses(agent, lab, spans) -> None:
    web = lab.pods["web"]
    marker = uuid.uuid4().hex[:12]
    statuses = [200, 404, 500, 503, 418, 204]
    for code in statuses:
        with socket.create_connection((web.ip, 8080)) as sock:
            sock.sendall(request("GET", f"/status/{code}?m={marker}", {"Connection": "close"}))
            f = sock.makefile("rb")
            assert read_response(f)[0] == code
    found = spans.collect(marker, len(statuses))
    assert sorted(s.http_status_code for s in found) == sorted(statuses)
    reasons = {s.http_status_code: s.tags["respstatus"] for s in found}
    assert reasons[404] == "Not Found" and reasons[503] == "Service Unavailable"
    assert {s.http_status_code for s in found if s.tags.get("error") == "true"} == {500, 503}


def test_pipelined_chunked_large_post_and_head_pair_in_order(agent, lab, spans) -> None:
    web = lab.pods["web"]
    marker = uuid.uuid4().hex[:12]
    batch = [
        ("GET", f"/bytes/10?m={marker}&k=a", b""),
        ("GET", f"/chunked/1000/7?m={marker}&k=b", b""),
        ("GET", f"/bytes/300000?m={marker}&k=c", b""),
        ("POST", f"/echo?m={marker}&k=d", b"p" * 5000),
        ("HEAD", f"/bytes/77?m={marker}&k=e", b""),
        ("GET", f"/status/404?m={marker}&k=f", b""),
    ]
    with socket.create_connection((web.ip, 8080)) as sock:
        sock.sendall(b"".join(request(m, p, body=b) for m, p, b in batch))  # pipelined
        f = sock.makefile("rb")
        for method, _, _ in batch:
            if method == "HEAD":
                status = int(f.readline().split()[1])
                while f.readline() not in (b"\r\n", b""):
                    pass
            else:
                status, _ = read_response(f)
            assert status in (200, 404)
    found = {s.http_url.rsplit("=", 1)[1]: s for s in spans.collect(marker, len(batch))}
    assert sorted(found) == list("abcdef")
    assert found["b"].tags["http.chunked"] == "true"
    chunk = len(f"{1000:x}\r\n") + 1000 + 2
    assert found["b"].response_size == len(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    ) + 7 * chunk + len("0\r\n\r\n")
    assert found["c"].response_size > 300000 and int(found["c"].tags["resppakcount"]) > 1
    assert found["d"].http_method == "POST" and found["d"].request_size == len(
        request("POST", found["d"].http_url, body=b"p" * 5000)
    )
    assert found["e"].http_method == "HEAD" and found["e"].http_status_code == 200
    assert found["f"].http_status_code == 404
    assert len(spans.collect(marker, len(batch))) == len(batch)


def test_a_request_whose_record_is_gone_still_gets_its_response(agent, lab, spans) -> None:
    """A record evicted (or never stored: map full) must not shift the pairing of the responses after it."""
    web = lab.pods["web"]
    marker = uuid.uuid4().hex[:12]
    paths = [f"/sleep/1000?m={marker}&k=a", f"/status/404?m={marker}&k=b", f"/status/503?m={marker}&k=c"]
    orphans = agent.datapath.stats()["orphan_responses"]
    with socket.create_connection((web.ip, 8080)) as sock:
        port = sock.getsockname()[1]
        sock.sendall(b"".join(request("GET", p) for p in paths))  # a: inline in its connection; b, c: the map
        mine = lambda: sorted((k for k in agent.datapath.exchanges if k.c.cport == port), key=lambda k: k.seq)  # noqa: E731
        wait_until(lambda: len(mine()) == 2, 5, "b and c stored")
        agent.datapath.exchanges.pop(mine()[0])  # b's record
        f = sock.makefile("rb")
        assert [read_response(f)[0] for _ in paths] == [200, 404, 503]
    found = {s.http_url.rsplit("=", 1)[1]: s for s in spans.collect(marker, 2)}
    assert sorted(found) == ["a", "c"]
    assert found["c"].http_status_code == 503
    assert agent.datapath.stats()["orphan_responses"] == orphans


def test_trace_headers_join_the_callers_trace(agent, lab, spans) -> None:
    web = lab.pods["web"]
    marker = uuid.uuid4().hex[:12]
    headers = [
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "X-Request-Id": "rid-1"},
        {"X-B3-TraceId": "463ac35c9f6413ad", "X-B3-SpanId": "a2fb4a1d1a96d312", "X-B3-Sampled": "1"},
        {"b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"},
    ]
    with socket.create_connection((web.ip, 8080)) as sock:
        f = sock.makefile("rb")
        for i, h in enumerate(headers):
            sock.sendall(request("GET", f"/?m={marker}&i={i}", h))
            read_response(f)
    found = {s.http_url[-1]: s for s in spans.collect(marker, 3)}
    assert (found["0"].trace_id, found["0"].parent_span_id) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert found["0"].tags["requestid"] == "rid-1"
    assert (found["1"].trace_id, found["1"].parent_span_id) == ("0000000000000000463ac35c9f6413ad", "a2fb4a1d1a96d312")
    assert (found["2"].trace_id, found["2"].parent_span_id) == ("80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1")


def test_label_filters_include_and_exclude_pods(agent, lab, redis_client) -> None:
    assert set(agent.attached) == {"default/web", "default/api"}  # no labels set: namespace default
    redis_client.rpush(keys.CLOVISOR_LABELS, "elsewhere", "default:app:api")
    try:
        wait_until(lambda: set(agent.attached) == {"elsewhere/other", "default/api"}, 10, "label filters applied")
    finally:
        redis_client.delete(keys.CLOVISOR_LABELS)
    wait_until(lambda: set(agent.attached) == {"default/web", "default/api"}, 10, "defaults restored")


def test_egress_match_traces_outbound_calls_of_pods_with_the_prefix(agent, lab, redis_client, spans) -> None:
    web, api = lab.pods["web"], lab.pods["api"]
    marker = uuid.uuid4().hex[:12]
    # The misspelt original key, with a pod-name prefix: only pods whose name starts with "we".
    redis_client.rpush(keys.CLOVISOR_EGRESS_MATCH_ORIGINAL, f"{api.ip}:8081:we")
    redis_client.rpush(keys.CLOVISOR_EGRESS_MATCH, "0:8081:nomatch")
    try:
        wait_until(lambda: agent.datapath.egress_of(agent.attached["default/web"].ifindex), 10, "egress rule on web")
        assert not agent.datapath.egress_of(agent.attached["default/api"].ifindex)
        script = (
            "import socket,sys\n"
            f"s=socket.create_connection(('{api.ip}',8081))\n"
            f"s.sendall(b'GET /bytes/5?m={marker} HTTP/1.1\\r\\nHost: api\\r\\nConnection: close\\r\\n\\r\\n')\n"
            "while s.recv(65536): pass\n"
        )
        subprocess.run(web.exec(sys.executable, "-c", script), check=True, timeout=20)
        found = spans.collect(marker, 2)
    finally:
        redis_client.delete(keys.CLOVISOR_EGRESS_MATCH_ORIGINAL, keys.CLOVISOR_EGRESS_MATCH)
    # One span from web's veth (outbound) and one from api's veth (inbound): the same exchange.
    assert sorted(s.tags["direction"] for s in found) == ["inbound", "outbound"]
    outbound = next(s for s in found if s.tags["direction"] == "outbound")
    assert (outbound.service, outbound.src_ip, outbound.dst_ip, outbound.dst_port) == ("web-svc", web.ip, api.ip, 8081)
    assert outbound.http_status_code == 200


def test_plugin_loaded_through_redis_adds_its_fields(agent, lab, redis_client, spans) -> None:
    agent.plugins.plugin_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    plugin = agent.plugins.plugin_dir / f"tenant_plugin_{uuid.uuid4().hex[:8]}.py"
    plugin.write_text(PLUGIN)
    plugin.chmod(0o644)
    redis_client.hset(keys.CLOVISOR_PROTO_CFG, "http", str(plugin))
    redis_client.publish(keys.CLOVISOR_PROTO_PLUGIN_CFG_CHAN, "http")
    try:
        wait_until(lambda: "http" in agent.plugins.protocols, 10, "plugin loaded")
        time.sleep(0.5)  # the ports are reconfigured to copy head bytes for the plugin
        web = lab.pods["web"]
        marker = uuid.uuid4().hex[:12]
        with socket.create_connection((web.ip, 8080)) as sock:
            sock.sendall(request("GET", f"/?m={marker}", {"X-Tenant": "acme", "Connection": "close"}))
            read_response(sock.makefile("rb"))
        (span,) = spans.collect(marker, 1)
        assert span.tags["tenant"] == "acme"
        assert span.tags["plugin.session"] == span.tags["session"]
    finally:
        redis_client.delete(keys.CLOVISOR_PROTO_CFG)
        plugin.unlink()


def test_a_plugin_anyone_could_write_is_refused_logged_and_counted(agent, redis_client, tmp_path, caplog) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from clovisor.metrics import _Collector

    planted = tmp_path / "planted.py"  # what ran as uid 0 before: nobody's, 0666, outside any plugin directory
    planted.write_text(PLUGIN)
    planted.chmod(0o666)
    os.chown(planted, 65534, 65534)
    before = agent.plugins.refused
    try:
        with caplog.at_level(logging.ERROR, "clovisor.plugins"):
            redis_client.hset(keys.CLOVISOR_PROTO_CFG, "http", str(planted))  # read at the next settings refresh
            wait_until(lambda: agent.plugins.refused == before + 1, 10, "the plugin refused")
        assert "http" not in agent.plugins.protocols
        reason = f"plugin for 'http' refused: {planted}: outside the plugin directory {agent.plugins.plugin_dir}"
        assert reason in [r.getMessage() for r in caplog.records]
        shown = agent.status().plugins
        assert (shown.refused, shown.errors["http"], shown.loaded) == (before + 1, reason, [])
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(agent.status))
        assert f"clovisor_plugins_refused_total {before + 1}.0" in generate_latest(registry).decode().splitlines()
    finally:
        redis_client.delete(keys.CLOVISOR_PROTO_CFG)


def test_unanswered_requests_are_evicted_and_counted(agent, lab) -> None:
    web = lab.pods["web"]
    before = agent.counters.evicted_exchanges
    with socket.create_connection((web.ip, 8080)) as sock:
        sock.sendall(request("GET", "/sleep/4000"))  # longer than the 2 s exchange timeout
        wait_until(lambda: agent.counters.evicted_exchanges == before + 1, 15, "eviction")
    assert agent.status().counters.evicted_exchanges == before + 1


def test_spans_beyond_the_budget_of_a_second_are_counted_not_emitted(agent, lab, spans) -> None:
    from clovisor.datapath import Limits

    web = lab.pods["web"]
    agent.datapath.set_span_budget(5)
    try:
        for _ in range(3):
            # The kernel's budget second is CLOCK_MONOTONIC's (time.monotonic): start just after
            # one begins, so that the whole burst falls in it.
            while time.monotonic() % 1.0 > 0.1:
                time.sleep(0.005)
            second = int(time.monotonic())
            before = agent.datapath.stats()["over_budget"]
            marker = uuid.uuid4().hex[:12]
            with socket.create_connection((web.ip, 8080)) as sock:
                f = sock.makefile("rb")
                for i in range(20):
                    sock.sendall(request("GET", f"/bytes/10?m={marker}&i={i}"))
                    assert read_response(f)[0] == 200
            if int(time.monotonic()) == second:
                break
        else:
            pytest.fail("no burst of 20 requests fitted in one second")
    finally:
        agent.datapath.set_span_budget(Limits().spans_per_second)
    found = spans.collect(marker, 5)
    assert sorted(int(s.http_url.rsplit("=", 1)[1]) for s in found) == [0, 1, 2, 3, 4]
    assert agent.datapath.stats()["over_budget"] - before == 15
    assert agent.status().drops["over_budget"] >= 15


def test_maps_are_read_in_batches_with_every_entry_once(agent) -> None:
    from clovisor.datapath import BATCH, _items

    datapath = agent.datapath
    ifindex = 0x7FFF0000  # no such interface: the rules match nothing
    ports = range(1000, 1000 + 2 * BATCH + 17)
    try:
        for port in ports:
            datapath.set_egress(ifindex, "10.9.8.7", port, "http", False)
        read = [(k.port, v.proto) for k, v in _items(datapath.egress) if k.ifindex == ifindex]
        assert sorted(read) == [(port, 1) for port in ports]
    finally:
        datapath.clear_interface(ifindex)
    assert not [k for k in datapath.egress if k.ifindex == ifindex]
