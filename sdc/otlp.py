"""Spans to the trace backend over OTLP/HTTP: the protobuf written directly, sent in batches.

The SDK builds a message object per span, attribute and value before serializing (about 45 µs a
span here, twice what making the span costs); the chain's pods write the bytes of each span
themselves, reusing the encoded attributes that repeat (node id, cluster, method). The bytes are
those of ``ExportTraceServiceRequest`` (opentelemetry-proto ``trace/v1``) as the SDK's encoder
makes them; ``tests/unit/test_sdc_otlp.py`` decodes both and compares.
"""

from __future__ import annotations

import collections
import logging
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import requests

log = logging.getLogger(__name__)

AttributeValue = str | bool | int | float
BATCH_SPANS = 512
QUEUE_SPANS = 8192
SEND_TIMEOUT = 5.0
CACHED_ATTRIBUTES = 4096
_FIXED64 = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")
# Span.flags: the span's context says whether its parent was remote (SPAN_FLAGS_CONTEXT_*).
HAS_IS_REMOTE = 0x100
IS_REMOTE = 0x200


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte(s), its length, its bytes."""
    return tag + varint(len(payload)) + payload


def any_value(value: AttributeValue) -> bytes:
    if isinstance(value, str):
        return field(b"\x0a", value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + varint(value & 0xFFFFFFFFFFFFFFFF)
    return b"\x21" + _DOUBLE.pack(value)


def key_value(key: str, value: AttributeValue) -> bytes:
    return field(b"\x0a", key.encode()) + field(b"\x12", any_value(value))


def attributes(pairs: Mapping[str, AttributeValue], tag: bytes) -> bytes:
    return b"".join(field(tag, key_value(k, v)) for k, v in pairs.items())


class EndedSpan(Protocol):
    """What is sent of one span. ``kind`` and ``status_code`` are the protobuf's numbers
    (SERVER 2, CLIENT 3; status UNSET 0, OK 1, ERROR 2)."""

    trace_id: int
    span_id: int
    parent_id: int
    parent_remote: bool
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, AttributeValue]
    status_code: int
    status_message: str


class SpanEncoder:
    """One pod's spans as an ``ExportTraceServiceRequest`` body."""

    def __init__(self, resource: Mapping[str, AttributeValue], scope: str):
        self.resource = field(b"\x0a", attributes(resource, b"\x0a"))
        self.scope = field(b"\x0a", field(b"\x0a", scope.encode()))
        self._attributes: dict[tuple[str, type, AttributeValue], bytes] = {}

    def _attribute(self, key: str, value: AttributeValue) -> bytes:
        cache_key = (key, type(value), value)
        found = self._attributes.get(cache_key)
        if found is None:
            if len(self._attributes) >= CACHED_ATTRIBUTES:
                self._attributes.clear()
            found = self._attributes[cache_key] = field(b"\x4a", key_value(key, value))
        return found

    def span(self, span: EndedSpan) -> bytes:
        parts = [
            b"\x0a\x10", span.trace_id.to_bytes(16, "big"),
            b"\x12\x08", span.span_id.to_bytes(8, "big"),
        ]  # fmt: skip
        if span.parent_id:
            parts += [b"\x22\x08", span.parent_id.to_bytes(8, "big")]
        parts += [
            field(b"\x2a", span.name.encode()),
            b"\x30", varint(span.kind),
            b"\x39", _FIXED64.pack(span.start_ns),
            b"\x41", _FIXED64.pack(span.end_ns),
        ]  # fmt: skip
        attribute = self._attribute
        parts += [attribute(k, v) for k, v in span.attributes.items()]
        status = field(b"\x12", span.status_message.encode()) if span.status_message else b""
        if span.status_code:
            status += b"\x18" + varint(span.status_code)
        flags = HAS_IS_REMOTE | (IS_REMOTE if span.parent_remote else 0)
        parts += [field(b"\x7a", status), b"\x85\x01", flags.to_bytes(4, "little")]
        return b"".join(parts)

    def request(self, spans: Iterable[EndedSpan]) -> bytes:
        scope_spans = self.scope + b"".join(field(b"\x12", self.span(s)) for s in spans)
        return field(b"\x0a", self.resource + field(b"\x12", scope_spans))


class SpanSender:
    """A thread that sends the pod's ended spans every ``delay`` seconds, or sooner once a batch
    is full; a span beyond ``QUEUE_SPANS`` waiting, or in a batch the backend refused, is
    counted in ``dropped``."""

    def __init__(self, url: str, encoder: SpanEncoder, delay: float):
        self.url = url
        self.encoder = encoder
        self.delay = delay
        self.ended = 0
        self.dropped = 0
        self._queue: collections.deque[EndedSpan] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._session = requests.Session()
        self._thread = threading.Thread(target=self._run, name="span-sender", daemon=True)
        self._thread.start()

    def add(self, span: EndedSpan) -> None:
        self.ended += 1
        if len(self._queue) >= QUEUE_SPANS:
            self.dropped += 1
            return
        self._queue.append(span)
        if len(self._queue) == BATCH_SPANS:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.delay)
            self._wake.clear()
            self._send_waiting()
        self._send_waiting()

    def _send_waiting(self) -> None:
        queue = self._queue
        while queue:
            batch = [queue.popleft() for _ in range(min(BATCH_SPANS, len(queue)))]
            self._send(batch)

    def _send(self, batch: Sequence[EndedSpan]) -> None:
        body = self.encoder.request(batch)
        headers = {"Content-Type": "application/x-protobuf"}
        for attempt in (1, 2):
            try:
                answer = self._session.post(self.url, data=body, headers=headers, timeout=SEND_TIMEOUT)
            except requests.RequestException as exc:
                problem = str(exc)
            else:
                if answer.ok:
                    return
                problem = f"HTTP {answer.status_code}"
            if attempt == 1:
                log.debug("sending %d spans failed (%s); trying once more", len(batch), problem)
        log.warning("%d spans not sent to %s: %s", len(batch), self.url, problem)
        self.dropped += len(batch)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Send what is waiting, then stop."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        self._session.close()
