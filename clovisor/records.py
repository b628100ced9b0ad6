"""Decoding the ring buffer records written by ``bpf/session_tracking.c``.

The layouts here mirror the C structs; ``Datapath`` checks the sizes against the compiled
program's map types at load time so the two cannot drift apart silently.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

REC_EXCHANGE = 1
REC_INCOMPLETE = 2
REC_TCP = 3
REC_PAYLOAD = 4

PROTO_HTTP = 1
PROTO_TCP = 3

XF_EGRESS = 1
XF_URL_TRUNC = 2
XF_TP_IS_B3 = 4
XF_HEAD_TRUNC = 8
XF_CHUNKED = 16
XF_CLOSE_DELIMITED = 32
XF_REQ_INCOMPLETE = 64

METHODS = ("", "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE")

# struct exchange: fixed part, then the string slots (a record from the ring buffer ends after
# its last non-empty string). The fixed part, in the order of its fields:
_BEFORE_FLAGS = "<BBBBH"  # kind, method, request and response versions, status
_BEFORE_IDENTITY = _BEFORE_FLAGS + "BB4Q4Q"  # flags, proto, four times, packet and byte counts
_IDENTITY_FORMAT = "I4s4sHHI"  # ifindex, client ip, server ip, client port, server port, seq
_FIXED = struct.Struct(_BEFORE_IDENTITY + _IDENTITY_FORMAT + "IIII11HH")  # sizes, string lengths
STRING_SLOTS = (
    ("host", 64),
    ("reason", 32),
    ("content_type", 64),
    ("url", 256),
    ("user_agent", 128),
    ("request_id", 64),
    ("trace_context", 80),
    ("b3_trace_id", 32),
    ("b3_span_id", 16),
    ("b3_parent_span_id", 16),
    ("envoy_decorator", 64),
)
_SLOT_OFFSETS: tuple[int, ...] = tuple(
    _FIXED.size + sum(size for _, size in STRING_SLOTS[:i]) for i in range(len(STRING_SLOTS))
)
EXCHANGE_SIZE = (_SLOT_OFFSETS[-1] + STRING_SLOTS[-1][1] + 7) & ~7
LAYOUT = (_FIXED.size, tuple(size for _, size in STRING_SLOTS))
FLAGS_OFFSET = struct.calcsize(_BEFORE_FLAGS)

# Where a record says which connection and exchange it belongs to.
_IDENTITY_OFFSET = struct.calcsize(_BEFORE_IDENTITY)
_IDENTITY = struct.Struct("<" + _IDENTITY_FORMAT)
CONNECTION_BYTES = slice(_IDENTITY_OFFSET, _IDENTITY_OFFSET + 16)
_IFINDEX = struct.Struct("<I")

_PAYLOAD_HDR = struct.Struct("<BBHII4s4sHH")
PAYLOAD_HEADER_SIZE = _PAYLOAD_HDR.size


@dataclass(slots=True)
class Exchange:
    """One traced request/response pair (or a TCP connection, or an unanswered request)."""

    kind: int
    method: str
    req_version: str
    resp_version: str
    status: int
    flags: int
    proto: int
    req_start_ns: int
    req_end_ns: int
    resp_start_ns: int
    resp_end_ns: int
    req_packets: int
    resp_packets: int
    req_bytes: int
    resp_bytes: int
    ifindex: int
    client_ip: str
    server_ip: str
    client_port: int
    server_port: int
    seq: int
    req_size: int
    req_head: int
    resp_size: int
    resp_head: int
    url: str = ""
    host: str = ""
    user_agent: str = ""
    request_id: str = ""
    trace_context: str = ""
    b3_trace_id: str = ""
    b3_span_id: str = ""
    b3_parent_span_id: str = ""
    reason: str = ""
    content_type: str = ""
    envoy_decorator: str = ""

    @property
    def egress(self) -> bool:
        return bool(self.flags & XF_EGRESS)

    @property
    def conn_key(self) -> tuple[int, str, str, int, int]:
        return (self.ifindex, self.client_ip, self.server_ip, self.client_port, self.server_port)

    @property
    def session_key(self) -> str:
        return session_key(self.client_ip, self.server_ip, self.client_port, self.server_port)


def session_key(client_ip: str, server_ip: str, client_port: int, server_port: int) -> str:
    """The original's session key: ``"<src ip hex>:<dst ip hex>:6:<sport>:<dport>"`` (request view)."""
    src = socket.inet_aton(client_ip).hex()
    dst = socket.inet_aton(server_ip).hex()
    return f"{src}:{dst}:6:{client_port}:{server_port}"


_VERSIONS = {0: "", 10: "HTTP/1.0", 11: "HTTP/1.1"}
_ntoa = socket.inet_ntoa


def ifindex_of(buf: memoryview) -> int:
    """The interface an exchange record was traced on."""
    return int(_IFINDEX.unpack_from(buf, _IDENTITY_OFFSET)[0])


def identity_of(buf: memoryview) -> tuple[tuple[int, str, str, int, int], int]:
    """(``Exchange.conn_key``, ``Exchange.seq``) of an exchange record, without decoding the rest."""
    ifindex, cip, sip, cport, sport, seq = _IDENTITY.unpack_from(buf, _IDENTITY_OFFSET)
    return (ifindex, _ntoa(cip), _ntoa(sip), cport, sport), seq


def decode_exchange(buf: memoryview) -> Exchange:
    """An ``Exchange`` from a record of kind 1-3."""
    (kind, method, req_ver, resp_ver, status, flags, proto,
     t0, t1, t2, t3, p0, p1, b0, b1, ifindex, cip, sip, cport, sport,
     seq, req_size, req_head, resp_size, resp_head, *lens) = _FIXED.unpack_from(buf, 0)  # fmt: skip
    ex = Exchange(
        kind,
        METHODS[method] if method < len(METHODS) else "",
        _VERSIONS.get(req_ver, ""),
        _VERSIONS.get(resp_ver, ""),
        status,
        flags,
        proto,
        t0, t1, t2, t3, p0, p1, b0, b1,
        ifindex,
        _ntoa(cip),
        _ntoa(sip),
        cport,
        sport,
        seq, req_size, req_head, resp_size, resp_head,
    )  # fmt: skip
    for (name, _size), offset, length in zip(STRING_SLOTS, _SLOT_OFFSETS, lens, strict=False):
        if length:
            setattr(ex, name, bytes(buf[offset : offset + length]).decode("latin-1"))
    return ex


@dataclass(slots=True)
class Payload:
    """Payload bytes of one message head (HTTP) or segment (TCP) for user plugins."""

    is_request: bool
    seq: int
    conn_key: tuple[int, str, str, int, int]
    data: bytes


def decode_payload(buf: memoryview) -> Payload:
    _kind, direction, length, seq, ifindex, cip, sip, cport, sport = _PAYLOAD_HDR.unpack_from(buf, 0)
    data = bytes(buf[PAYLOAD_HEADER_SIZE : PAYLOAD_HEADER_SIZE + length])
    return Payload(direction == 0, seq, (ifindex, _ntoa(cip), _ntoa(sip), cport, sport), data)
