"""Exchange records as the BPF program writes them, built with clovisor/records.py's layout."""

from __future__ import annotations

from clovisor import records


def exchange_record(
    kind: int = records.REC_EXCHANGE,
    flags: int = 0,
    strings: dict[str, bytes] | None = None,
    *,
    method: int = 7,
    versions: tuple[int, int] = (10, 11),
    status: int = 503,
    times: tuple[int, ...] = (0, 0, 0, 0),
    whole: bool = False,
) -> bytes:
    """A record of one exchange (client 10.0.0.1:40000, server 10.0.0.2:8080 on ifindex 7). It
    ends after its last non-empty string, as the ring buffer gives it, or with ``whole`` at the
    struct's full size."""
    strings = strings or {}
    lens = [len(strings.get(name, b"")) for name, _ in records.STRING_SLOTS]
    head = records._FIXED.pack(
        kind, method, *versions, status, flags, records.PROTO_HTTP, *times, 2, 3, 180, 400,
        7, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 40000, 8080, 4, 120, 95, 250, 150, *lens, 0,
    )  # fmt: skip
    body = bytearray(head)
    for (name, size), offset in zip(records.STRING_SLOTS, records._SLOT_OFFSETS, strict=True):
        value = strings.get(name, b"")
        assert len(body) == offset and len(value) <= size
        body += value + bytes(size - len(value))
    if whole:
        return bytes(body) + bytes(records.EXCHANGE_SIZE - len(body))
    last = max((records._SLOT_OFFSETS[i] + n for i, n in enumerate(lens) if n), default=len(head))
    return bytes(body[:last])
