"""A BPF ring buffer consumer that reads records in batches straight from the shared memory.

BCC's own ring buffer API calls a Python callback through ctypes for every record; at tens of
thousands of records a second that alone takes a core. Here the ring is mmap'ed as libbpf
does (consumer page read-write, producer page and the data area read-only, the data area
mapped twice so that no record wraps) and a batch is a loop over memoryview slices.
"""

from __future__ import annotations

import mmap
import select
import struct
from collections.abc import Iterator

_BUSY = 1 << 31
_DISCARD = 1 << 30
_HDR = 8
_LEN = struct.Struct("<I")


class RingBuffer:
    """Consumer side of one ``BPF_MAP_TYPE_RINGBUF`` map, given its fd and data size in bytes."""

    def __init__(self, map_fd: int, size: int) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring buffer size {size} is not a power of two")
        page = mmap.PAGESIZE
        self._fd = map_fd
        self._mask = size - 1
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._view = memoryview(self._producer)
        self._data = self._view[page:]
        # The positions are read and written as whole 8-byte words (struct's "<Q" goes byte by
        # byte: the kernel could see a torn consumer position and take the ring for full).
        self._cons_pos = memoryview(self._consumer)[:8].cast("Q")
        self._prod_pos = self._view[:8].cast("Q")
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)

    def wait(self, timeout: float) -> bool:
        """Block until the kernel signals new records or ``timeout`` seconds pass."""
        return bool(self._epoll.poll(timeout))

    def pending(self) -> int:
        """Bytes written by the kernel and not yet consumed."""
        return self._prod_pos[0] - self._cons_pos[0]

    def drain(self, limit: int = 1 << 30) -> Iterator[memoryview]:
        """Yield committed records (views valid only until the next record is taken), at most
        ``limit`` of them. The consumer position advances as the iteration goes on."""
        cons = self._cons_pos[0]
        prod = self._prod_pos[0]
        data = self._data
        mask = self._mask
        taken = 0
        try:
            while cons < prod and taken < limit:
                off = cons & mask
                hdr = _LEN.unpack_from(data, off)[0]
                if hdr & _BUSY:
                    break
                length = hdr & ~(_BUSY | _DISCARD)
                nxt = cons + ((length + _HDR + 7) & ~7)
                if not hdr & _DISCARD:
                    taken += 1
                    yield data[off + _HDR : off + _HDR + length]
                cons = nxt
                if taken & 255 == 0:
                    self._cons_pos[0] = cons
        finally:
            self._cons_pos[0] = cons

    def close(self) -> None:
        self._epoll.close()
        self._cons_pos.release()
        self._prod_pos.release()
        self._data.release()
        self._view.release()
        self._producer.close()
        self._consumer.close()
