"""The compiled span encoder (clovisor/spanwire.c) against the definition in clovisor/spans.py."""

from __future__ import annotations

import itertools
import random

import pytest

from clovisor import _spanwire, records
from clovisor.spans import Clock, PodInfo, SpanEncoder, trace_context
from protos import records_pb2
from tests.unit.exchange_records import exchange_record

pytestmark = pytest.mark.unit

POD = PodInfo("api-7f", "default", "api", "node-1")

TRACE_HEADERS: list[tuple[int, dict[str, bytes]]] = [
    (0, {}),
    (0, {"trace_context": b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}),
    (0, {"trace_context": b" 00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01\t"}),
    (0, {"trace_context": b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902zz-01"}),  # bad parent
    (0, {"trace_context": b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"}),  # zero trace id
    (0, {"trace_context": b"00-4bf92f35-00f067aa0ba902b7-01", "b3_trace_id": b"463ac35c9f6413ad"}),  # falls to B3
    (records.XF_TP_IS_B3, {"trace_context": b"80f198ee56343ba8-e457b5a2e4d86bd1-1"}),
    (records.XF_TP_IS_B3, {"trace_context": b"80f198ee56343ba8-"}),
    (records.XF_TP_IS_B3, {"trace_context": b"\xa080f198ee56343ba8\x85-e457b5a2e4d86bd1"}),  # latin-1 spaces
    (records.XF_TP_IS_B3, {"trace_context": b"nodash", "b3_trace_id": b"463ac35c9f6413ad"}),
    (0, {"b3_trace_id": b"463ac35c9f6413ad48485a3953bb6124", "b3_span_id": b"0020000000000001"}),
    (0, {"b3_trace_id": b"463ac35c9f6413ad48485a3953bb612g"}),
    (0, {"b3_trace_id": b"463ac35c9f6413ad", "b3_span_id": b"-020000000000001"}),
]

STRINGS: list[dict[str, bytes]] = [
    {},
    {
        "url": b"/orders/7?id=7&q=caf\xe9",
        "host": b"api.default",
        "user_agent": b"curl/8.1 \xa9",
        "request_id": b"7f0c-11",
        "reason": b"Service Unavailable",
        "content_type": b"text/html; charset=ISO-8859-1",
        "envoy_decorator": b"api.default.svc:80/*",
    },
    {"url": b"?only=query", "reason": b"OK"},
    {"url": b"/" + b"x" * 255, "user_agent": b"\xff" * 128, "host": b"h" * 64},  # slots full
]

EXTRA_TAGS: list[dict[str, str] | None] = [
    None,
    {"tenant": "acme", "podname": "renamed", "respstatus": "", "host": "from-plugin", "ü": "€"},
]


def record(
    kind: int, flags: int, strings: dict[str, bytes], status: int = 503, times: tuple[int, ...] = (0, 0, 0, 0)
) -> bytes:
    return exchange_record(kind, flags, strings, status=status, times=times)


def both(raw: bytes, extra: dict[str, str] | None) -> tuple[records_pb2.Span, records_pb2.Span, bytes]:
    clock = Clock()
    compiled, python = SpanEncoder(clock), SpanEncoder(clock, compiled=False)
    key, value = compiled.encode(memoryview(raw), POD, extra)
    got = records_pb2.Span.FromString(value)
    expected = records_pb2.Span.FromString(python.encode(memoryview(raw), POD, extra)[1])
    assert key == got.trace_id.encode()
    return got, expected, key


def test_the_extension_is_built() -> None:
    assert SpanEncoder(Clock()).compiled


def test_the_span_field_numbers_it_writes_are_those_of_the_proto() -> None:
    fields = records_pb2.Span.DESCRIPTOR.fields_by_name
    assert {name: fields[name].number for name in _spanwire.SPAN_FIELDS} == _spanwire.SPAN_FIELDS
    tags = fields["tags"].message_type.fields_by_name
    assert (tags["key"].number, tags["value"].number) == (1, 2)  # the map entry it writes


@pytest.mark.parametrize(("kind", "flags", "strings"), list(itertools.product(
    (records.REC_EXCHANGE, records.REC_INCOMPLETE, records.REC_TCP),
    (0, records.XF_URL_TRUNC | records.XF_CHUNKED | records.XF_EGRESS),
    STRINGS,
)))  # fmt: skip
@pytest.mark.parametrize("extra", EXTRA_TAGS)
def test_compiled_and_python_encoders_give_the_same_span(
    kind: int, flags: int, strings: dict[str, bytes], extra: dict[str, str] | None
) -> None:
    times = (5_000_000, 5_200_000, 5_500_000, 6_000_000)
    got, expected, _ = both(record(kind, flags, strings, times=times), extra)
    assert len(got.span_id) == 16 and got.span_id != expected.span_id
    assert len(got.trace_id) == 32 and got.trace_id != expected.trace_id  # no header: random ids
    got.span_id, got.trace_id = expected.span_id, expected.trace_id
    assert got == expected


@pytest.mark.parametrize(
    ("flags", "kind"), [(0, records_pb2.SPAN_KIND_SERVER), (records.XF_EGRESS, records_pb2.SPAN_KIND_CLIENT)]
)
def test_both_encoders_give_the_host_header_and_the_pods_side_of_the_exchange(flags: int, kind: int) -> None:
    strings = {"url": b"/orders/7", "host": b"api.default.svc:8080"}
    got, expected, _ = both(record(records.REC_EXCHANGE, flags, strings), None)
    assert (got.http_host, got.kind) == (expected.http_host, expected.kind) == ("api.default.svc:8080", kind)
    got, expected, _ = both(record(records.REC_TCP, flags, strings), None)  # a connection has no request
    assert (got.http_host, got.kind) == (expected.http_host, expected.kind) == ("", kind)


@pytest.mark.parametrize(("flags", "headers"), TRACE_HEADERS)
def test_trace_headers_are_read_as_the_python_encoder_reads_them(flags: int, headers: dict[str, bytes]) -> None:
    got, expected, _ = both(record(records.REC_EXCHANGE, flags, headers), None)
    got.span_id = expected.span_id
    if "traceid" not in expected.tags:  # the trace id is random when no header gives one
        got.trace_id = expected.trace_id
    assert got == expected


@pytest.mark.parametrize(
    ("times", "duration", "latency"),
    [
        ((1_000, 1_500, 2_999_999, 2_000_999), 1999, "2998"),
        ((9_000, 8_000, 7_000, 1_000), 0, "0"),  # clocks from two CPUs may go backwards
        ((9_000, 0, 7_000, 10_999), 1, None),
    ],
)
def test_times_round_as_the_python_encoder_rounds_them(
    times: tuple[int, ...], duration: int, latency: str | None
) -> None:
    got, expected, _ = both(record(records.REC_EXCHANGE, 0, {}, times=times), None)
    assert (got.duration_us, got.tags.get("server.latency_us")) == (duration, latency)
    got.span_id, got.trace_id = expected.span_id, expected.trace_id
    assert got == expected


def test_a_truncated_or_corrupt_record_is_refused_with_its_size() -> None:
    encoder = SpanEncoder(Clock())
    with pytest.raises(ValueError, match="exchange record of 100 bytes, shorter than its 132-byte header"):
        encoder.encode(memoryview(bytes(100)), POD)
    raw = record(records.REC_EXCHANGE, 0, {"url": b"/abc"})
    with pytest.raises(ValueError, match=r"exchange record of \d+ bytes: string slot 3 says 4 bytes"):
        encoder.encode(memoryview(raw[:-1]), POD)
    with pytest.raises(TypeError, match="extra tags must map str to str"):
        encoder.encode(memoryview(raw), POD, {"n": 1})  # type: ignore[dict-item]


def test_random_records_encode_as_the_python_encoder_encodes_them() -> None:
    rng = random.Random(7)
    alphabet = b"0123456789abcdefABCDEF-?/ \t\xa0\x85\xe9\xffxyz"
    for _ in range(1500):
        strings = {
            slot.name: bytes(rng.choice(alphabet) for _ in range(rng.randint(0, slot.capacity)))
            for slot in records.STRING_SLOTS
            if rng.random() < 0.5
        }
        if rng.random() < 0.3:
            strings["trace_context"] = rng.choice(TRACE_HEADERS[1:])[1].get("trace_context", b"")
        times = tuple(rng.choice((0, rng.randint(0, 1 << 62))) for _ in range(4))
        kind = rng.choice((records.REC_EXCHANGE, records.REC_INCOMPLETE, records.REC_TCP))
        raw = record(kind, rng.randint(0, 255), strings, status=rng.randint(0, 999), times=times)
        extra = rng.choice(EXTRA_TAGS)
        got, expected, _ = both(raw, extra)
        got.span_id = expected.span_id
        from_headers = trace_context(records.decode_exchange(memoryview(raw)))[0]
        if from_headers is None:
            got.trace_id = expected.trace_id
        assert got == expected and got.trace_id == (from_headers or got.trace_id), (raw, extra)
