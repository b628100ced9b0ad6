"""The snort-ids pod's sink without the chain: reading copies, answering them, rebuilding the
client's request from them, and the span of a copy whose caller did not sample its trace."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from clover.config import Config
from sdc import topology
from sdc.ids.service import SnortIds
from sdc.ids.sink import BODY_LIMIT, BadRequest, Copy, SinkConnection, parse_head
from sdc.runtime import Runtime
from sdc.tracing import unsampled_trace_id

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture
def ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SnortIds]:
    monkeypatch.setenv("CLOVER_ACCESS_LOG_DIR", str(tmp_path / "logs"))
    cfg = dataclasses.replace(  # loopback addresses of its own: they bind without root
        Config.from_env(), sdc_mode="loopback", sdc_subnet="127.177.250.0/24", sdc_trace_ratio=0.0, state_dir=tmp_path
    )
    runtime = Runtime(cfg, "snort-ids")
    yield SnortIds(runtime)
    runtime.access_log.close()


def copy_head(proxy_ip: str, extra: str = "") -> bytes:
    """A copy as the proxy's nginx sends it (``sdc/nginx_proxy.py``), unsampled."""
    return (
        f"GET /catalog/?page=1 HTTP/1.1\r\nHost: {proxy_ip}:9180\r\nX-Forwarded-For: 198.51.100.1, 192.0.2.7\r\n"
        f"X-Real-IP: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nX-Request-Id: rid-1\r\n"
        f'Forwarded: for="192.0.2.7:41000";by="{proxy_ip}:9180";proto=http\r\n'
        f"X-Clover-Mirror: length=0; truncated=0; xff=1; rid=1\r\n"
        f"x-envoy-downstream-service-cluster: proxy-access-control\r\n"
        f"traceparent: 00-{TRACE}-{PARENT}-00\r\nX-B3-TraceId: {TRACE}\r\nX-B3-SpanId: {PARENT}\r\n"
        f"X-B3-Sampled: 0\r\nUser-Agent: asafaweb.com\r\n{extra}\r\n"
    ).encode()


async def exchange(ids: SnortIds, data: bytes, answers: int, pieces: int = 1) -> tuple[bytes, list[Copy], bool]:
    """Send ``data`` on one connection (in ``pieces`` writes); (what came back once ``answers``
    answers did, the copies taken, whether the sink closed the connection)."""
    taken: list[Copy] = []
    ids.listener.take = taken.append
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkConnection(ids.listener), "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    size = -(-len(data) // pieces)
    for start in range(0, len(data), size):
        writer.write(data[start : start + size])
        await writer.drain()
        await asyncio.sleep(0.01)
    got = b""
    while got.count(b"HTTP/1.1 ") < answers or not got.endswith(b"\r\n\r\n"):
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        if not chunk:
            break
        got += chunk
    try:
        closed = await asyncio.wait_for(reader.read(1), 0.3) == b""
    except TimeoutError:
        closed = False
    writer.close()
    server.close()
    return got, taken, closed


@pytest.mark.parametrize("pieces", [1, 7])
def test_pipelined_copies_are_answered_in_order_and_handed_on_with_their_bodies(ids: SnortIds, pieces: int) -> None:
    proxy_ip = topology.pod_ip(ids.runtime.cfg, "proxy-access-control")
    body = bytes(range(256)) * (BODY_LIMIT // 256 + 4)  # 1 KiB past what is inspected
    post = f"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    got, taken, _ = asyncio.run(exchange(ids, copy_head(proxy_ip) + post + copy_head(proxy_ip)[:20], 2, pieces))

    first, second = taken[0].inbound.traceresponse, taken[1].inbound.traceresponse
    assert first is not None and first.startswith(f"00-{TRACE}-") and first.endswith("-00")
    assert second is not None and TRACE not in second  # a new trace (ratio 0: not sampled)
    assert not taken[1].inbound.span.get_span_context().trace_flags.sampled
    assert (
        got
        == (
            f"HTTP/1.1 200 OK\r\nContent-Length: 0\r\ntraceresponse: {first}\r\n\r\n"
            f"HTTP/1.1 200 OK\r\nContent-Length: 0\r\ntraceresponse: {second}\r\n\r\n"
        ).encode()
    )
    assert [(c.inbound.received.method, c.inbound.received.target, c.body) for c in taken] == [
        ("GET", "/catalog/?page=1", b""),
        ("POST", "/upload", body[:BODY_LIMIT]),
    ]
    assert taken[1].headers == [("Host", "h"), ("Content-Length", str(len(body)))]
    stats = ids.inbound_stats
    assert (stats.counters["upstream_cx_total"], stats.counters["upstream_rq_total"]) == (1, 2)

    # As the client sent it: the hops' headers gone, the client's own X-Forwarded-For entry kept.
    record = ids._record(taken[0])
    assert {k: v for k, v in record.items() if k != "at"} == {
        "t": "http", "src": "192.0.2.7", "sp": 41000, "dst": proxy_ip, "dp": 9180, "m": "GET",
        "u": "/catalog/?page=1", "b": "", "tp": first,
        "h": [("Host", f"{proxy_ip}:9180"), ("X-Forwarded-For", "198.51.100.1"), ("User-Agent", "asafaweb.com")],
    }  # fmt: skip
    assert base64.b64decode(ids._record(taken[1])["b"]) == body[:BODY_LIMIT]


@pytest.mark.parametrize(
    ("head", "status", "why"),
    [
        (b"GET / HTTP/1.1\r\n folded: x", 400, "not a header line: ' folded: x'"),
        (b"GET / HTTP/1.1\r\nName : x", 400, "not a header line: 'Name : x'"),
        (b"GET / HTTP/2.0\r\nHost: h", 400, "not an HTTP/1.x request line: 'GET / HTTP/2.0'"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked", 411,
         "a body needs Content-Length here (Transfer-Encoding is not read)"),
        (b"POST / HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 3", 400, "Content-Length '2' is not one number"),
        (b"POST / HTTP/1.1\r\nContent-Length: -2", 400, "Content-Length '-2' is not one number"),
    ],
)  # fmt: skip
def test_a_head_the_sink_cannot_read_is_refused_naming_what_is_wrong(head: bytes, status: int, why: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_head(head)
    assert (refused.value.status, str(refused.value)) == (status, why)


def test_a_bad_request_gets_its_status_and_the_connection_closes(ids: SnortIds) -> None:
    got, taken, closed = asyncio.run(exchange(ids, b"GET / HTTP/1.1\r\nbad line\r\n\r\n", 1))
    why = b"not a header line: 'bad line'\n"
    assert got == b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(why) + (
        b"Connection: close\r\n\r\n" + why
    )
    assert taken == [] and closed


def test_http_1_0_and_connection_close_are_answered_once_then_closed(ids: SnortIds) -> None:
    for head in (b"GET / HTTP/1.0\r\nHost: h\r\n\r\n", b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"):
        got, taken, closed = asyncio.run(exchange(ids, head, 1))
        assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"Connection: close\r\n\r\n")
        assert len(taken) == 1 and closed


W3C_UNSAMPLED = {"traceparent": f"00-{TRACE}-{PARENT}-00"}
W3C_SAMPLED = {"traceparent": f"00-{TRACE}-{PARENT}-01"}
B3_UNSAMPLED = {"x-b3-traceid": TRACE[16:], "x-b3-spanid": PARENT, "x-b3-sampled": "0"}
B3_SAMPLED = {"x-b3-traceid": TRACE, "x-b3-spanid": PARENT, "x-b3-sampled": "1"}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (W3C_UNSAMPLED, int(TRACE, 16)),
        (W3C_SAMPLED, 0),
        ({**W3C_SAMPLED, **B3_UNSAMPLED}, int(TRACE[16:], 16)),  # B3 wins, as in the propagators
        ({**W3C_UNSAMPLED, **B3_SAMPLED}, 0),
        ({**W3C_UNSAMPLED, "x-b3-flags": "1", "x-b3-traceid": TRACE, "x-b3-spanid": PARENT}, 0),
        ({**W3C_UNSAMPLED, "x-b3-traceid": "not hex"}, int(TRACE, 16)),  # invalid B3: the W3C context
        ({**W3C_UNSAMPLED, "tracestate": "k=v"}, 0),
        ({**W3C_UNSAMPLED, "b3": f"{TRACE}-{PARENT}-0"}, 0),
        ({"traceparent": f"01-{TRACE}-{PARENT}-00"}, 0),
        ({"traceparent": f"00-{TRACE}-{'0' * 16}-00"}, 0),
        ({}, 0),
        ({"x-b3-traceid": TRACE, "x-b3-spanid": "0" * 16, "x-b3-sampled": "1"}, 0),
        ({"traceparent": f"00-{'0' * 32}-{PARENT}-01"}, 0),
        ({"traceparent": f"00-{TRACE}-{PARENT}-03"}, 0),
    ],
)
def test_an_unsampled_caller_is_found_as_the_propagators_find_it(
    ids: SnortIds, headers: dict[str, str], expected: int
) -> None:
    assert unsampled_trace_id(headers) == expected
    tel = ids.runtime.telemetry
    parent_of = trace.get_current_span
    assert (
        parent_of(tel.extract(headers)).get_span_context()
        == parent_of(tel.propagator.extract(headers)).get_span_context()
    )
    made = tel.start("copy", SpanKind.SERVER, tel.extract(headers))
    fast = tel.unsampled_child(headers)
    if expected:
        assert fast is not None
        made_ctx, fast_ctx = made.get_span_context(), fast.get_span_context()
        assert (fast_ctx.trace_id, fast_ctx.trace_flags, fast.is_recording()) == (expected, 0, False)
        assert (made_ctx.trace_id, made_ctx.trace_flags, made.is_recording()) == (expected, 0, False)
    else:
        assert fast is None


def test_closing_ends_idle_connections_at_once_and_a_request_being_read_after_its_answer(ids: SnortIds) -> None:
    async def run() -> tuple[bytes, bytes, bool]:
        listener = ids.listener
        listener.take = lambda copy: None
        await listener.bind(0)
        port = listener._servers[0].sockets[0].getsockname()[1]
        ip = ids.runtime.ip
        idle_reader, idle_writer = await asyncio.open_connection(ip, port)
        busy_reader, busy_writer = await asyncio.open_connection(ip, port)
        busy_writer.write(b"GET /half HTTP/1.1\r\nHost: h\r\n")
        await busy_writer.drain()
        while len(listener.connections) < 2 or all(c.idle for c in listener.connections):
            await asyncio.sleep(0.01)
        closing = asyncio.create_task(listener.close(5.0))
        idle_end = await asyncio.wait_for(idle_reader.read(), 2)
        busy_writer.write(b"\r\n")
        busy_answer = await asyncio.wait_for(busy_reader.read(), 2)
        await asyncio.wait_for(closing, 2)
        idle_writer.close()
        busy_writer.close()
        return idle_end, busy_answer, bool(listener.connections)

    idle_end, busy_answer, left = asyncio.run(run())
    assert idle_end == b""
    assert busy_answer.startswith(b"HTTP/1.1 200 OK\r\n") and busy_answer.endswith(b"Connection: close\r\n\r\n")
    assert not left
