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
    lens = [len(strings.get(slot.name, b"")) for slot in records.STRING_SLOTS]
    head = records.FIXED_PART.pack(
        kind, method, *versions, status, flags, records.PROTO_HTTP, *times, 2, 3, 180, 400,
        7, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 40000, 8080, 4, 120, 95, 250, 150, *lens,
    )  # fmt: skip
    body = bytearray(head)
    for slot in records.STRING_SLOTS:
        value = strings.get(slot.name, b"")
        assert len(body) == slot.offset and len(value) <= slot.capacity
        body += value + bytes(slot.capacity - len(value))
    if whole:
        return bytes(body) + bytes(records.EXCHANGE_SIZE - len(body))
    last = max((slot.offset + n for slot, n in zip(records.STRING_SLOTS, lens, strict=True) if n), default=len(head))
    return bytes(body[:last])
