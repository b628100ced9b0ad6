"""Decoding the ring buffer records written by ``bpf/session_tracking.c``.

Their layout is the one ``bpf/exchange.h`` declares, as the compiled ``_spanwire`` module exports
it (offsets and sizes from the C compiler); this module says only how each field reads in
Python. ``Datapath`` compares the layout with the compiled program's map types at load time.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import NamedTuple

from clovisor import _spanwire as layout

REC_EXCHANGE = layout.REC_EXCHANGE
REC_INCOMPLETE = layout.REC_INCOMPLETE
REC_TCP = layout.REC_TCP
REC_PAYLOAD = layout.REC_PAYLOAD

PROTO_HTTP = layout.PROTO_HTTP
PROTO_TCP = layout.PROTO_TCP

XF_EGRESS = layout.XF_EGRESS
XF_URL_TRUNC = layout.XF_URL_TRUNC
XF_TP_IS_B3 = layout.XF_TP_IS_B3
XF_HEAD_TRUNC = layout.XF_HEAD_TRUNC
XF_CHUNKED = layout.XF_CHUNKED
XF_CLOSE_DELIMITED = layout.XF_CLOSE_DELIMITED
XF_REQ_INCOMPLETE = layout.XF_REQ_INCOMPLETE

METHODS = ("", "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE")


class StringSlot(NamedTuple):
    """A string of an exchange record: the ``Exchange`` attribute it fills, where it lies, its capacity."""

    name: str
    offset: int
    capacity: int


def fields_struct(
    fields: dict[str, tuple[int, int]], reads: tuple[tuple[str, str], ...], start: int = 0, end: int | None = None
) -> struct.Struct:
    """A little-endian ``struct.Struct`` over bytes ``start`` to ``end`` (default: the last field's end)
    of a record that reads each (field, format) of ``reads`` at the field's place in ``fields``
    ({name: (offset, size)}, as the C compiler laid them out)."""
    fmt, at = "<", start
    for name, code in reads:
        offset, size = fields[name]
        if offset < at or struct.calcsize(code) != size:
            raise RuntimeError(f"record field {name} is {size} bytes at {offset}: it cannot be read as {code!r} there")
        fmt += _padding(offset - at) + code
        at = offset + size
    return struct.Struct(fmt + _padding((at if end is None else end) - at))


def _padding(size: int) -> str:
    return f"{size}x" if size else ""


STRING_SLOTS = tuple(StringSlot(*slot) for slot in layout.STRING_SLOTS)
EXCHANGE_SIZE = layout.EXCHANGE_SIZE

# The fixed part of an exchange record, before its strings, in the order of Exchange's fields (a
# record from the ring buffer ends after its last non-empty string).
_CONNECTION_READS = (("ifindex", "I"), ("cip", "4s"), ("sip", "4s"), ("cport", "H"), ("sport", "H"))
_IDENTITY_READS = (*_CONNECTION_READS, ("seq", "I"))
FIXED_PART = fields_struct(layout.EXCHANGE_FIELDS, (
    ("kind", "B"), ("method", "B"), ("req_ver", "B"), ("resp_ver", "B"), ("status", "H"), ("flags", "B"),
    ("proto", "B"), ("req_start_ns", "Q"), ("req_end_ns", "Q"), ("resp_start_ns", "Q"), ("resp_end_ns", "Q"),
    ("pkts", "2Q"), ("bytes", "2Q"), *_IDENTITY_READS, ("req_size", "I"), ("req_head", "I"), ("resp_size", "I"),
    ("resp_head", "I"), ("lens", f"{len(STRING_SLOTS)}H"),
), end=layout.EXCHANGE_FIXED_SIZE)  # fmt: skip
FLAGS_OFFSET = layout.EXCHANGE_FIELDS["flags"][0]

# Where a record says which connection and exchange it belongs to.
_IDENTITY_OFFSET = layout.EXCHANGE_FIELDS["ifindex"][0]
_IDENTITY = fields_struct(layout.EXCHANGE_FIELDS, _IDENTITY_READS, start=_IDENTITY_OFFSET)
_SPORT_OFFSET, _SPORT_SIZE = layout.EXCHANGE_FIELDS["sport"]
CONNECTION_BYTES = slice(_IDENTITY_OFFSET, _SPORT_OFFSET + _SPORT_SIZE)
_IFINDEX = struct.Struct("<I")

PAYLOAD_HEADER_SIZE = layout.PAYLOAD_FIELDS["data"][0]
_PAYLOAD_HDR = fields_struct(
    layout.PAYLOAD_FIELDS,
    (("kind", "B"), ("dir", "B"), ("len", "H"), ("seq", "I"), *_CONNECTION_READS),
    end=PAYLOAD_HEADER_SIZE,
)


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
     seq, req_size, req_head, resp_size, resp_head, *lens) = FIXED_PART.unpack_from(buf, 0)  # fmt: skip
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
    for slot, length in zip(STRING_SLOTS, lens, strict=True):
        if length:
            setattr(ex, slot.name, bytes(buf[slot.offset : slot.offset + length]).decode("latin-1"))
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
