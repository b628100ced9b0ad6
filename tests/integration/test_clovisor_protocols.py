"""Clovisor's kernel parser on HTTP's framing corners and on per-connection ports, as root: real
BPF programs on the veths of lab pods, raw-socket servers in the pods that send exactly the bytes
the test names, spans read back from Kafka.

HTTP (a port named ``http``): 1xx interim responses before the final one, 304/HEAD/204 (no body
whatever Content-Length says), bodies that end with the connection (HTTP/1.0, ``Connection:
close``). Each exchange gives exactly one span: the final response's status, reason and size.

TCP (ports named ``tcp``, ``tcp-*``, ``grpc``, ``grpc-*``): one span per connection, operation
``tcp <port>``, the payload bytes each way, and the packets and IP bytes that a capture on the
same veth saw up to the packet that closed the connection.

The servers run in the pods as ``python -m tests.integration.test_clovisor_protocols http|tcp|grpc PORT...``.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pytest

from clover.config import Config
from tests.integration.clovisor_support import call_from_pod, egress_traced, serving, wait_until

pytestmark = [
    pytest.mark.bpf,
    pytest.mark.skipif(os.geteuid() != 0, reason="loading BPF programs and making namespaces needs root"),
]

SERVER, CLIENT = 1, 2  # records_pb2.SPAN_KIND_SERVER, SPAN_KIND_CLIENT
HTTP_PORT = 8180
TCP_PORTS = {"tcp": 9200, "tcp-echo": 9201, "grpc-raw": 9202}
GRPC_PORT = 9203  # named "grpc": a real gRPC server
GRPC_METHOD = "/clover.test.Echo/Echo"
HOST = f"raw.cvp:{HTTP_PORT}"


# -- the scripted HTTP server --------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What the server sends for one path: interim responses, then the final response in parts (a
    write each, or all in one write), then maybe it closes the connection."""

    final: tuple[bytes, ...]
    interim: tuple[bytes, ...] = ()
    body_after_first: bool = False  # Expect: 100-continue: the request body comes after interim[0]
    one_write: bool = False
    close: bool = False

    @property
    def final_bytes(self) -> bytes:
        return b"".join(self.final)

    @property
    def wire(self) -> bytes:
        return b"".join(self.interim) + self.final_bytes

    @property
    def status(self) -> int:
        return int(self.final_bytes.split(b" ", 2)[1])

    @property
    def reason(self) -> str:
        return self.final_bytes.split(b"\r\n", 1)[0].split(b" ", 2)[2].decode()

    @property
    def content_type(self) -> str:
        head = self.final_bytes.split(b"\r\n\r\n", 1)[0].decode()
        return next((line[13:].strip() for line in head.split("\r\n") if line.startswith("Content-Type:")), "")


def response(status_line: str, headers: Sequence[str] = (), body: bytes = b"", length: int | None = None) -> bytes:
    """A response's head and body; its Content-Length is ``length`` (the body's size by default), none for -1."""
    lines = [status_line, *headers]
    if length is None:
        length = len(body)
    if length >= 0:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload; as=style\r\n\r\n"
REPLIES = {
    "/upload": Reply(
        interim=(CONTINUE,),
        body_after_first=True,
        final=(response("HTTP/1.1 201 Created", ["Content-Type: text/plain"], b"stored 1000 bytes\n"),),
    ),
    "/hinted": Reply(
        interim=(HINTS,), final=(response("HTTP/1.1 200 OK", ["Content-Type: text/html"], b"<p>hinted</p>\n"),)
    ),
    "/hinted-one-write": Reply(
        interim=(CONTINUE, HINTS, HINTS),
        final=(response("HTTP/1.1 202 Accepted", ["Content-Type: application/json"], b'{"queued":true}'),),
        one_write=True,
    ),
    # RFC 9112: the reason phrase may be empty; the interim response's must not stand in for it.
    "/hinted-no-reason": Reply(interim=(HINTS,), final=(response("HTTP/1.1 200 ", [], b"abc"),)),
    "/cached": Reply(final=(response("HTTP/1.1 304 Not Modified", ['ETag: "v7"'], length=1234),)),
    "/page": Reply(final=(response("HTTP/1.1 200 OK", ["Content-Type: text/html"], length=5000),)),  # for HEAD
    "/nothing": Reply(final=(response("HTTP/1.1 204 No Content", ["Server: raw"], length=-1),)),
    "/next": Reply(final=(response("HTTP/1.1 200 OK", [], b"next\n"),)),
    "/legacy": Reply(
        final=(response("HTTP/1.0 200 OK", ["Content-Type: text/plain"], length=-1), b"a" * 20000, b"b" * 12345),
        close=True,
    ),
    "/stream": Reply(
        final=(response("HTTP/1.1 200 OK", ["Connection: close"], length=-1), b"s" * 3000, b"t" * 70),
        close=True,
    ),
    "/empty-close": Reply(final=(response("HTTP/1.1 200 OK", ["Connection: close"], length=-1),), close=True),
}


def serve_http(port: int) -> None:
    with socket.create_server(("0.0.0.0", port)) as server:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=_answer_http, args=(conn,), daemon=True).start()


def _answer_http(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn, conn.makefile("rb") as f:
        while True:
            line = f.readline()
            if not line:
                return
            length = 0
            while (header := f.readline()) not in (b"\r\n", b""):
                name, _, value = header.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            reply = REPLIES[line.split()[1].decode().split("?")[0]]
            parts = reply.interim + reply.final
            if reply.body_after_first:
                conn.sendall(parts[0])
                parts = parts[1:]
            f.read(length)
            for part in (b"".join(parts),) if reply.one_write else parts:
                conn.sendall(part)
                time.sleep(0.01)  # a segment each
            if reply.close:
                return


def http_request(
    method: str, target: str, headers: Sequence[str], body: bytes = b"", version: str = "HTTP/1.1"
) -> bytes:
    head = f"{method} {target} {version}\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n"
    return head.encode() + body


def read_exactly(f, size: int) -> bytes:  # type: ignore[no-untyped-def]
    data = f.read(size)
    assert len(data) == size, f"connection closed after {len(data)} of {size} bytes"
    return data


# -- the TCP and gRPC servers --------------------------------------------------------------------


def serve_tcp(ports: Sequence[int]) -> None:
    """Each line ``send N ...`` or ``close N ...`` is answered with N bytes; ``close`` then closes."""
    servers = [socket.create_server(("0.0.0.0", port)) for port in ports]
    for server in servers:
        threading.Thread(target=_accept_tcp, args=(server,), daemon=True).start()
    threading.Event().wait()


def _accept_tcp(server: socket.socket) -> None:
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_answer_tcp, args=(conn,), daemon=True).start()


def _answer_tcp(conn: socket.socket) -> None:
    with conn, conn.makefile("rb") as f:
        for line in f:
            word, size = line.split()[:2]
            conn.sendall(b"r" * int(size))
            if word == b"close":
                return


def ask(word: str, reply: int, size: int) -> bytes:
    """A line of ``size`` bytes asking for ``reply`` bytes."""
    text = f"{word} {reply} ".encode()
    return text + b"." * (size - len(text) - 1) + b"\n"


def serve_grpc(port: int) -> None:
    from concurrent import futures

    import grpc

    def echo(request: bytes, context: object) -> bytes:
        return b"e" * (2 * len(request))

    handler = grpc.method_handlers_generic_handler(
        GRPC_METHOD.split("/")[1], {GRPC_METHOD.split("/")[2]: grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[handler])
    server.add_insecure_port(f"0.0.0.0:{port}")
    server.start()
    server.wait_for_termination()


# -- a capture on the traced veth ----------------------------------------------------------------

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_VNET_HDR = 15
SO_RCVBUFFORCE = 33
VNET_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10


@dataclass(frozen=True)
class Packet:
    src: tuple[str, int]
    dst: tuple[str, int]
    flags: int
    seq: int
    ip_bytes: int  # on the wire: a GSO packet's segments each have their own IP and TCP headers
    payload: int
    segments: int  # on the wire: a GSO packet is several


@dataclass(frozen=True)
class Counts:
    """One connection as Clovisor counts it: from its SYN to the packet that closes it (the second
    FIN, or a RST), per direction: packets, IP bytes, payload bytes (without retransmissions)."""

    req_packets: int
    resp_packets: int
    req_ip_bytes: int
    resp_ip_bytes: int
    req_payload: int
    resp_payload: int


class Capture:
    """Every frame on one interface (an AF_PACKET socket, opened before the traffic), with the
    kernel's GSO segment size of each (the virtio-net header), as the BPF program sees them."""

    def __init__(self, ifname: str) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
        self.sock.bind((ifname, ETH_P_ALL))
        self.sock.setblocking(False)
        self.packets: list[Packet] = []

    def read(self) -> list[Packet]:
        while True:
            try:
                frame = self.sock.recv(1 << 18)
            except BlockingIOError:
                break
            packet = self._parse(frame)
            if packet is not None:
                self.packets.append(packet)
        (_, drops) = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        assert drops == 0, f"the capture dropped {drops} frames"
        return self.packets

    @staticmethod
    def _parse(frame: bytes) -> Packet | None:
        _, gso_type, _, gso_size, _, _ = VNET_HDR.unpack_from(frame)
        eth = frame[VNET_HDR.size :]
        if eth[12:14] != b"\x08\x00" or eth[14 + 9] != socket.IPPROTO_TCP:
            return None
        ip = eth[14:]
        ihl = (ip[0] & 0xF) * 4
        tot = struct.unpack_from("!H", ip, 2)[0]
        sport, dport, seq = struct.unpack_from("!HHI", ip, ihl)
        doff = (ip[ihl + 12] >> 4) * 4
        payload = tot - ihl - doff
        segments = -(-payload // gso_size) if gso_type and gso_size else 1
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        wire_bytes = tot + (segments - 1) * (ihl + doff)
        return Packet((src, sport), (dst, dport), ip[ihl + 13], seq, wire_bytes, payload, segments)

    def connection(self, client: tuple[str, int], server: tuple[str, int]) -> Counts:
        packets = [p for p in self.read() if {p.src, p.dst} == {client, server}]
        assert packets and packets[0].flags & (TCP_SYN | TCP_ACK) == TCP_SYN, "the capture missed the SYN"
        counts = {True: [0, 0, 0], False: [0, 0, 0]}
        next_seq: dict[bool, int] = {}
        fins = set()
        for p in packets:
            is_request = p.src == client
            count = counts[is_request]
            count[0] += p.segments
            count[1] += p.ip_bytes
            if p.flags & TCP_SYN:
                next_seq[is_request] = p.seq + 1
            elif p.payload:
                end = p.seq + p.payload
                count[2] += max(0, end - max(p.seq, next_seq.get(is_request, p.seq)))
                next_seq[is_request] = max(end, next_seq.get(is_request, end))
            if p.flags & TCP_FIN:
                fins.add(is_request)
            if p.flags & TCP_RST or len(fins) == 2:
                break
        else:
            raise AssertionError(f"the capture has no end of {client} -> {server}")
        (rq, rqb, rqp), (rs, rsb, rsp) = counts[True], counts[False]
        return Counts(rq, rs, rqb, rsb, rqp, rsp)

    def close(self) -> None:
        self.sock.close()


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(cfg: Config) -> Iterator[object]:
    from clovisor.lab import Lab

    module = ("-m", "tests.integration.test_clovisor_protocols")
    with Lab("cvp", "10.207.22.0/24") as lab:
        raw = lab.add_pod("raw", ports={"http": HTTP_PORT}, service="raw-svc")
        tcp = lab.add_pod("tcp", ports={**TCP_PORTS, "grpc": GRPC_PORT}, service="tcp-svc")
        caller = lab.add_pod("caller", service="caller-svc")
        servers = [
            (raw, (sys.executable, *module, "http", str(HTTP_PORT))),
            (tcp, (sys.executable, *module, "tcp", *map(str, TCP_PORTS.values()))),
            (tcp, (sys.executable, *module, "grpc", str(GRPC_PORT))),
        ]
        with serving(cfg, lab, servers):
            lab.register(cfg, caller)
            yield lab


@pytest.fixture
def emitted(agent) -> Iterator[Callable[[], int]]:  # type: ignore[no-untyped-def]
    """How many spans Clovisor emitted since the test began (no stray one: the test's count); after
    the test, asserts that the kernel lost no framing and paired every response."""
    before, spans_before = agent.datapath.stats(), agent.counters.spans
    yield lambda: agent.counters.spans - spans_before
    after = agent.datapath.stats()
    lost = {n: after[n] - before[n] for n in ("lost_sync", "orphan_responses", "closed_incomplete", "sequence_gaps")}
    assert lost == dict.fromkeys(lost, 0)


def spans_by_key(spans, marker: str, count: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """The spans of the requests whose target ends with ``&k=<key>``, by key; exactly ``count``."""
    found = spans.collect(marker, count)
    by_key = {s.http_url.rsplit("&k=", 1)[1]: s for s in found}
    assert len(found) == len(by_key) == count, sorted(s.http_url for s in found)
    return by_key


def assert_http_span(span, pod, *, method: str, target: str, request: bytes, reply: Reply, host: str = HOST) -> None:  # type: ignore[no-untyped-def]
    """One exchange's span, every field from the bytes that went each way."""
    assert span.operation_name == f"{method} {target.split('?')[0]}"
    assert (span.http_method, span.http_url, span.http_host) == (method, target, host)
    assert (span.http_status_code, span.tags.get("respstatus", "")) == (reply.status, reply.reason)
    assert span.tags.get("content-type", "") == reply.content_type
    assert (span.request_size, span.response_size) == (len(request), len(reply.final_bytes))
    assert span.tags["reqproto"] == request.split(b"\r\n", 1)[0].rsplit(b" ", 1)[1].decode()
    assert span.tags["respproto"] == reply.final_bytes[:8].decode()
    assert span.tags.get("host", "") == host
    assert (span.service, span.dst_ip, span.dst_port, span.kind) == (pod.service, pod.ip, HTTP_PORT, SERVER)
    assert span.tags["direction"] == "inbound" and span.tags["protocol-2"] == "HTTP"
    assert not {"error", "clovisor.incomplete", "http.chunked", "clovisor.url_truncated"} & set(span.tags)


# -- HTTP ----------------------------------------------------------------------------------------


def test_interim_responses_give_one_span_with_the_final_status_and_size(agent, lab, spans, emitted) -> None:
    """100 Continue (the body sent after it), 103 Early Hints in a segment of its own and several
    interim responses in the final one's segment: one span each, then the next exchange pairs."""
    raw = lab.pods["raw"]
    m = uuid.uuid4().hex[:12]
    headers = [f"Host: {HOST}", "User-Agent: cvp/1"]
    sent = {}
    with socket.create_connection((raw.ip, HTTP_PORT)) as sock, sock.makefile("rb") as f:
        body = b"u" * 1000
        expect = ["Content-Type: application/octet-stream", "Expect: 100-continue", "Content-Length: 1000"]
        head = http_request("POST", f"/upload?m={m}&k=a", [*headers, *expect])
        sock.sendall(head)
        assert read_exactly(f, len(CONTINUE)) == CONTINUE
        sock.sendall(body)
        assert read_exactly(f, len(REPLIES["/upload"].final_bytes)) == REPLIES["/upload"].final_bytes
        sent["a"] = ("POST", f"/upload?m={m}&k=a", head + body, REPLIES["/upload"])
        for key, path in (("b", "/hinted"), ("c", "/hinted-one-write"), ("d", "/hinted-no-reason"), ("e", "/next")):
            target = f"{path}?m={m}&k={key}"
            req = http_request("GET", target, headers)
            sock.sendall(req)
            assert read_exactly(f, len(REPLIES[path].wire)) == REPLIES[path].wire
            sent[key] = ("GET", target, req, REPLIES[path])
    found = spans_by_key(spans, m, len(sent))
    assert emitted() == len(sent)
    for key, (method, target, req, reply) in sent.items():
        assert_http_span(found[key], raw, method=method, target=target, request=req, reply=reply)
        assert found[key].user_agent == "cvp/1"


@pytest.mark.parametrize("pipelined", [False, True], ids=["one-by-one", "pipelined"])
def test_304_head_and_204_end_with_their_head_whatever_content_length_says(
    agent, lab, spans, emitted, pipelined: bool
) -> None:
    raw = lab.pods["raw"]
    m = uuid.uuid4().hex[:12]
    batch = [
        ("HEAD", f"/page?m={m}&k=a", ["Accept: text/html"], REPLIES["/page"]),
        ("GET", f"/cached?m={m}&k=b", ['If-None-Match: "v7"'], REPLIES["/cached"]),
        # A typical REST update: a typed body in, no content out (the request's type is not the span's).
        ("PUT", f"/nothing?m={m}&k=c", ["Content-Type: application/json", "Content-Length: 8"], REPLIES["/nothing"]),
        ("GET", f"/next?m={m}&k=d", [], REPLIES["/next"]),
    ]
    bodies = {"PUT": b'{"v": 7}'}
    requests = [
        http_request(method, target, [f"Host: {HOST}", *h], bodies.get(method, b"")) for method, target, h, _ in batch
    ]
    with socket.create_connection((raw.ip, HTTP_PORT)) as sock, sock.makefile("rb") as f:
        if pipelined:
            sock.sendall(b"".join(requests))
        for req, (_, _, _, reply) in zip(requests, batch, strict=True):
            if not pipelined:
                sock.sendall(req)
            assert read_exactly(f, len(reply.wire)) == reply.wire
    found = spans_by_key(spans, m, len(batch))
    assert emitted() == len(batch)
    for req, (method, target, _, reply) in zip(requests, batch, strict=True):
        assert_http_span(found[target[-1]], raw, method=method, target=target, request=req, reply=reply)


@pytest.mark.parametrize(
    ("path", "version", "half_close"),
    [
        ("/legacy", "HTTP/1.0", False),
        ("/legacy", "HTTP/1.0", True),
        ("/stream", "HTTP/1.1", False),
        ("/empty-close", "HTTP/1.1", False),
    ],
    ids=["http1.0", "http1.0-client-half-closed", "connection-close", "connection-close-no-body"],
)
def test_a_body_without_length_ends_when_the_server_closes(
    agent, lab, spans, emitted, path: str, version: str, half_close: bool
) -> None:
    raw = lab.pods["raw"]
    m = uuid.uuid4().hex[:12]
    target = f"{path}?m={m}&k=a"
    # An HTTP/1.0 request without Host (it was optional then); HTTP/1.1 asks to close.
    headers = [] if version == "HTTP/1.0" else [f"Host: {HOST}", "Connection: close"]
    req = http_request("GET", target, headers, version=version)
    with socket.create_connection((raw.ip, HTTP_PORT)) as sock, sock.makefile("rb") as f:
        sock.sendall(req)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        assert f.read() == REPLIES[path].wire  # to the end of the stream
    (span,) = spans.collect(m, 1)
    assert emitted() == 1
    host = "" if version == "HTTP/1.0" else HOST
    assert_http_span(span, raw, method="GET", target=target, request=req, reply=REPLIES[path], host=host)


def test_an_egress_exchange_is_the_calling_pods_client_span(agent, lab, redis_client, spans, emitted) -> None:
    """The same close-delimited exchange on the caller's veth (egress match: the pod is the client)
    and on the server's: a CLIENT span of the caller and a SERVER span of the server."""
    raw, caller = lab.pods["raw"], lab.pods["caller"]
    m = uuid.uuid4().hex[:12]
    target = f"/stream?m={m}&k=a"
    req = http_request("GET", target, [f"Host: {HOST}", "Connection: close"])
    with egress_traced(agent, redis_client, caller, raw.ip, HTTP_PORT):
        assert call_from_pod(caller, raw.ip, HTTP_PORT, req) == REPLIES["/stream"].wire
        found = spans.collect(m, 2)
    assert sorted(s.kind for s in found) == [SERVER, CLIENT] and emitted() == 2
    server = next(s for s in found if s.kind == SERVER)
    client = next(s for s in found if s.kind == CLIENT)
    assert_http_span(server, raw, method="GET", target=target, request=req, reply=REPLIES["/stream"])
    addresses = (client.service, client.src_ip, client.dst_ip, client.dst_port)
    assert addresses == ("caller-svc", caller.ip, raw.ip, HTTP_PORT)
    assert client.tags["direction"] == "outbound" and client.tags["podname"] == "caller"
    same = ("operation_name", "http_method", "http_url", "http_host", "http_status_code")
    assert [getattr(client, name) for name in same] == [getattr(server, name) for name in same]
    assert (client.request_size, client.response_size) == (server.request_size, server.response_size)


# -- TCP and gRPC --------------------------------------------------------------------------------


@pytest.fixture
def capture(lab) -> Iterator[Capture]:  # type: ignore[no-untyped-def]
    cap = Capture(lab.pods["tcp"].host_veth)
    yield cap
    cap.close()


def tcp_spans(spans, pod, conns: Sequence[tuple[int, int]], since_us: int) -> dict[tuple[int, int], object]:  # type: ignore[no-untyped-def]
    """The spans of these (client port, server port) connections to ``pod`` since ``since_us``, one each."""

    def mine(s) -> bool:  # type: ignore[no-untyped-def]
        return s.dst_ip == pod.ip and (s.src_port, s.dst_port) in conns and s.start_time_us >= since_us

    found = spans.collect_where(mine, len(conns))
    by_conn = {(s.src_port, s.dst_port): s for s in found}
    assert len(found) == len(by_conn) == len(conns), [(s.src_port, s.dst_port) for s in found]
    return by_conn


def assert_tcp_span(span, lab, port: int, counts: Counts, sent: int | None = None, received: int | None = None) -> None:  # type: ignore[no-untyped-def]
    pod = lab.pods["tcp"]
    assert span.operation_name == f"tcp {port}"
    assert (span.service, span.dst_ip, span.dst_port, span.src_ip) == (pod.service, pod.ip, port, lab.gateway)
    assert (span.kind, span.http_method, span.http_url, span.http_host) == (SERVER, "", "", "")
    assert not span.HasField("http_status_code")
    assert (span.request_size, span.response_size) == (counts.req_payload, counts.resp_payload)
    if sent is not None:
        assert (span.request_size, span.response_size) == (sent, received)
    tags = {k: span.tags[k] for k in ("reqpakcount", "resppakcount", "reqbytecount", "respbytecount")}
    assert tags == {
        "reqpakcount": str(counts.req_packets),
        "resppakcount": str(counts.resp_packets),
        "reqbytecount": str(counts.req_ip_bytes),
        "respbytecount": str(counts.resp_ip_bytes),
    }
    assert (span.tags["dstport"], span.tags["protocol-1"], span.tags["direction"]) == (str(port), "TCP", "inbound")
    assert not {"protocol-2", "reqmethod", "respstatuscode", "host", "error"} & set(span.tags)


def tcp_session(ip: str, port: int, rounds: Sequence[tuple[int, int]], server_closes: bool) -> tuple[int, int, int]:
    """Rounds of (request line size, reply size); the last one asks the server to close when
    ``server_closes``, else the client closes first. Returns (client port, bytes sent, received)."""
    sent = received = 0
    with socket.create_connection((ip, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client_port = sock.getsockname()[1]
        for i, (size, reply) in enumerate(rounds):
            last = i == len(rounds) - 1
            sock.sendall(ask("close" if last and server_closes else "send", reply, size))
            sent += size
            got = 0
            while got < reply:
                chunk = sock.recv(min(65536, reply - got))
                assert chunk, "the server closed early"
                got += len(chunk)
            received += got
        if not server_closes:
            sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""  # the server's FIN
    return client_port, sent, received


@pytest.mark.parametrize(
    ("name", "rounds", "server_closes"),
    [
        ("tcp", [(100, 700), (30, 5000), (1200, 1)], False),
        ("tcp-echo", [(50, 1000), (20, 10)], True),
        ("grpc-raw", [(64, 300_000)], False),  # GSO packets: counted as the segments they are on the wire
    ],
)
def test_a_tcp_port_gives_one_span_per_connection_with_its_counts(
    agent, lab, spans, capture, emitted, name: str, rounds: list[tuple[int, int]], server_closes: bool
) -> None:
    tcp = lab.pods["tcp"]
    port = TCP_PORTS[name]
    since_us = time.time_ns() // 1000 - 1_000_000
    client_port, sent, received = tcp_session(tcp.ip, port, rounds, server_closes)
    assert (sent, received) == (sum(r[0] for r in rounds), sum(r[1] for r in rounds))
    span = tcp_spans(spans, tcp, [(client_port, port)], since_us)[(client_port, port)]
    assert emitted() == 1
    counts = capture.connection((lab.gateway, client_port), (tcp.ip, port))
    assert_tcp_span(span, lab, port, counts, sent, received)


def test_overlapping_connections_on_one_port_are_spans_of_their_own(agent, lab, spans, capture, emitted) -> None:
    tcp = lab.pods["tcp"]
    port = TCP_PORTS["tcp-echo"]
    since_us = time.time_ns() // 1000 - 1_000_000
    first, second = socket.create_connection((tcp.ip, port)), socket.create_connection((tcp.ip, port))
    with first, second, first.makefile("rb") as f1, second.makefile("rb") as f2:
        for sock, f, reply in ((first, f1, 300), (second, f2, 40), (first, f1, 2), (second, f2, 9000)):
            sock.sendall(ask("send", reply, 25))
            assert read_exactly(f, reply) == b"r" * reply
        ports = [first.getsockname()[1], second.getsockname()[1]]
        for sock in (second, first):
            sock.shutdown(socket.SHUT_WR)
        assert f1.read() == f2.read() == b""
    found = tcp_spans(spans, tcp, [(p, port) for p in ports], since_us)
    assert emitted() == 2
    for client_port, received in zip(ports, (302, 9040), strict=True):
        counts = capture.connection((lab.gateway, client_port), (tcp.ip, port))
        assert_tcp_span(found[(client_port, port)], lab, port, counts, 50, received)


def test_a_grpc_port_gives_one_span_for_the_channels_connection(agent, lab, spans, capture, emitted) -> None:
    """Real gRPC (HTTP/2) on a port named ``grpc``: not parsed as HTTP/1, one connection-level
    span whose sizes are the HTTP/2 bytes each way."""
    import grpc

    tcp = lab.pods["tcp"]
    since_us = time.time_ns() // 1000 - 1_000_000
    with grpc.insecure_channel(f"{tcp.ip}:{GRPC_PORT}", options=[("grpc.enable_http_proxy", 0)]) as channel:
        echo = channel.unary_unary(GRPC_METHOD)
        for size in (10, 2000, 70_000):
            assert echo(b"q" * size, timeout=10) == b"e" * (2 * size)
    server = (tcp.ip, GRPC_PORT)

    def closed_connections() -> list[tuple[str, int]]:
        # The channel's connections (one, unless gRPC reconnected), once each has closed.
        conns = {p.src for p in capture.read() if p.dst == server and p.flags & TCP_SYN}
        return sorted(conns) if all(_closed(capture.packets, c, server) for c in conns) else []

    conns = wait_until(closed_connections, 20, "the gRPC connection closed")
    found = tcp_spans(spans, tcp, [(c[1], GRPC_PORT) for c in conns], since_us)
    assert len(conns) == emitted() == 1
    for client in conns:
        counts = capture.connection(client, server)
        assert counts.req_payload > 72_010 and counts.resp_payload > 144_020  # the messages and HTTP/2's framing
        assert_tcp_span(found[(client[1], GRPC_PORT)], lab, GRPC_PORT, counts)


def _closed(packets: Sequence[Packet], client: tuple[str, int], server: tuple[str, int]) -> bool:
    mine = [p for p in packets if {p.src, p.dst} == {client, server}]
    return any(p.flags & TCP_RST for p in mine) or len({p.src for p in mine if p.flags & TCP_FIN}) == 2


if __name__ == "__main__":
    what, *ports = sys.argv[1:]
    if what == "http":
        serve_http(int(ports[0]))
    elif what == "tcp":
        serve_tcp([int(p) for p in ports])
    elif what == "grpc":
        serve_grpc(int(ports[0]))
    else:
        sys.exit("usage: python -m tests.integration.test_clovisor_protocols http|tcp|grpc PORT...")
