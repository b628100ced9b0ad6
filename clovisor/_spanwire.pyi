"""clovisor/spanwire.c: the span encoder, and the record layout of bpf/exchange.h."""

EXCHANGE_FIELDS: dict[str, tuple[int, int]]
PAYLOAD_FIELDS: dict[str, tuple[int, int]]
STRING_SLOTS: tuple[tuple[str, int, int], ...]
COUNTERS: tuple[str, ...]
SPAN_FIELDS: dict[str, int]
EXCHANGE_SIZE: int
EXCHANGE_FIXED_SIZE: int
REC_EXCHANGE: int
REC_INCOMPLETE: int
REC_TCP: int
REC_PAYLOAD: int
PROTO_HTTP: int
PROTO_TCP: int
XF_EGRESS: int
XF_URL_TRUNC: int
XF_TP_IS_B3: int
XF_HEAD_TRUNC: int
XF_CHUNKED: int
XF_CLOSE_DELIMITED: int
XF_REQ_INCOMPLETE: int

def encode_exchange(
    record: bytes | memoryview, clock_offset_ns: int, extra_tags: dict[str, str] | None = None, /
) -> tuple[bytes, bytes]: ...
