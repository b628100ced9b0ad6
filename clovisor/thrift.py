"""Jaeger's Thrift span batches, encoded by hand (binary protocol for the collector's HTTP
endpoint ``/api/traces``, compact protocol for the agent's UDP ``emitBatch``).

A value is described by ``(thrift type, value)``; a struct is a list of ``(field id, thrift
type, value)``; a list is ``(element type, [values])``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

STOP, BOOL, BYTE, DOUBLE, I16, I32, I64, STRING, STRUCT, MAP, SET, LIST = 0, 2, 3, 4, 6, 8, 10, 11, 12, 13, 14, 15
_COMPACT = {BOOL: 1, BYTE: 3, I16: 4, I32: 5, I64: 6, DOUBLE: 7, STRING: 8, LIST: 9, SET: 10, MAP: 11, STRUCT: 12}

Field = tuple[int, int, Any]


def _signed64(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


# -- binary protocol ---------------------------------------------------------------------------
def binary_value(ttype: int, value: Any, out: bytearray) -> None:
    if ttype == BOOL:
        out.append(1 if value else 0)
    elif ttype == I32:
        out += struct.pack(">i", value)
    elif ttype == I64:
        out += struct.pack(">q", _signed64(value))
    elif ttype == DOUBLE:
        out += struct.pack(">d", value)
    elif ttype == STRING:
        data = value.encode() if isinstance(value, str) else bytes(value)
        out += struct.pack(">i", len(data)) + data
    elif ttype == STRUCT:
        binary_struct(value, out)
    elif ttype == LIST:
        etype, items = value
        out += struct.pack(">bi", etype, len(items))
        for item in items:
            binary_value(etype, item, out)
    else:
        raise ValueError(f"thrift type {ttype} is not supported")


def binary_struct(fields: Sequence[Field], out: bytearray) -> None:
    for fid, ttype, value in fields:
        if value is None:
            continue
        out += struct.pack(">bh", ttype, fid)
        binary_value(ttype, value, out)
    out.append(STOP)


# -- compact protocol --------------------------------------------------------------------------
def _varint(n: int, out: bytearray) -> None:
    while True:
        if n < 0x80:
            out.append(n)
            return
        out.append((n & 0x7F) | 0x80)
        n >>= 7


def _zigzag(n: int, bits: int) -> int:
    return ((n << 1) ^ (n >> (bits - 1))) & ((1 << bits) - 1)


def compact_value(ttype: int, value: Any, out: bytearray) -> None:
    if ttype == BOOL:
        out.append(1 if value else 2)
    elif ttype in (I16, I32):
        _varint(_zigzag(int(value), 32), out)
    elif ttype == I64:
        _varint(_zigzag(_signed64(int(value)), 64), out)
    elif ttype == DOUBLE:
        out += struct.pack("<d", value)
    elif ttype == STRING:
        data = value.encode() if isinstance(value, str) else bytes(value)
        _varint(len(data), out)
        out += data
    elif ttype == STRUCT:
        compact_struct(value, out)
    elif ttype == LIST:
        etype, items = value
        if len(items) < 15:
            out.append((len(items) << 4) | _COMPACT[etype])
        else:
            out.append(0xF0 | _COMPACT[etype])
            _varint(len(items), out)
        for item in items:
            compact_value(etype, item, out)
    else:
        raise ValueError(f"thrift type {ttype} is not supported")


def compact_struct(fields: Sequence[Field], out: bytearray) -> None:
    last = 0
    for fid, ttype, value in fields:
        if value is None:
            continue
        ctype = (1 if value else 2) if ttype == BOOL else _COMPACT[ttype]
        delta = fid - last
        if 0 < delta <= 15:
            out.append((delta << 4) | ctype)
        else:
            out.append(ctype)
            _varint(_zigzag(fid, 16), out)
        last = fid
        if ttype != BOOL:
            compact_value(ttype, value, out)
    out.append(STOP)


# -- Jaeger ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JaegerSpan:
    trace_id: int  # 128 bits
    span_id: int
    parent_span_id: int
    operation: str
    start_us: int
    duration_us: int
    tags: Mapping[str, str]


def _tag(key: str, value: str) -> list[Field]:
    return [(1, STRING, key), (2, I32, 0), (3, STRING, value)]


def _span(span: JaegerSpan) -> list[Field]:
    refs = None
    if span.parent_span_id:
        ref = [(1, I32, 0), (2, I64, span.trace_id), (3, I64, span.trace_id >> 64), (4, I64, span.parent_span_id)]
        refs = (STRUCT, [ref])
    return [
        (1, I64, span.trace_id & ((1 << 64) - 1)),
        (2, I64, span.trace_id >> 64),
        (3, I64, span.span_id),
        (4, I64, span.parent_span_id),
        (5, STRING, span.operation),
        (6, LIST, refs),
        (7, I32, 1),  # sampled
        (8, I64, span.start_us),
        (9, I64, span.duration_us),
        (10, LIST, (STRUCT, [_tag(k, v) for k, v in span.tags.items()])),
    ]


def batch(service: str, spans: Sequence[JaegerSpan], process_tags: Mapping[str, str]) -> list[Field]:
    process = [(1, STRING, service), (2, LIST, (STRUCT, [_tag(k, v) for k, v in process_tags.items()]))]
    return [(1, STRUCT, process), (2, LIST, (STRUCT, [_span(s) for s in spans]))]


def encode_batch_binary(service: str, spans: Sequence[JaegerSpan], process_tags: Mapping[str, str]) -> bytes:
    """Body of a POST to the collector's ``/api/traces`` (Content-Type application/x-thrift)."""
    out = bytearray()
    binary_struct(batch(service, spans, process_tags), out)
    return bytes(out)


def encode_emit_batch_compact(
    service: str, spans: Sequence[JaegerSpan], process_tags: Mapping[str, str], seqid: int = 0
) -> bytes:
    """One UDP datagram for the agent: a oneway ``Agent.emitBatch(batch)`` call."""
    out = bytearray(b"\x82\x81")  # compact protocol id; version 1, message type ONEWAY
    _varint(seqid, out)
    compact_value(STRING, "emitBatch", out)
    compact_struct([(1, STRUCT, batch(service, spans, process_tags))], out)
    return bytes(out)
