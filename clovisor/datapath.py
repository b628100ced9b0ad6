"""The loaded BPF programs and their maps: compile once, share across every traced veth.

One instance of the programs serves every pod; the maps are keyed by the host veth's ifindex.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from clovisor import _spanwire, records
from clovisor.ringbuf import RingBuffer

log = logging.getLogger(__name__)

BPF_DIR = Path(__file__).resolve().parent / "bpf"
SOURCE = BPF_DIR / "session_tracking.c"

PROTO_CODES = {"http": records.PROTO_HTTP, "tcp": records.PROTO_TCP}

# The kernel counters (index into the `stats` map), with the names Clovisor reports.
STAT_NAMES = _spanwire.COUNTERS
# Counters that mean something was lost (exposed as drops).
DROP_STATS = (
    "connection_map_full",
    "exchange_map_full",
    "ring_buffer_full",
    "lost_sync",
    "parse_steps_exhausted",
    "over_budget",
)

PAGE = 4096


@dataclass(frozen=True)
class Limits:
    """Sizes of the bounded maps."""

    connections: int = 16384
    exchanges: int = 8192
    ring_bytes: int = 8 << 20
    ports: int = 4096
    spans_per_second: int = 10_000  # records emitted per second at most; 0: no limit

    def validate(self) -> None:
        if self.ring_bytes < PAGE or self.ring_bytes & (self.ring_bytes - 1):
            raise ValueError(f"ring_bytes={self.ring_bytes} must be a power of two of at least {PAGE}")
        for name in ("connections", "exchanges", "ports"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.spans_per_second < 0:
            raise ValueError(f"spans_per_second={self.spans_per_second} must be 0 (no limit) or positive")


class Datapath:
    """The compiled programs, their maps and the ring buffer reader."""

    def __init__(self, limits: Limits | None = None) -> None:
        from bcc import BPF

        self.limits = limits or Limits()
        self.limits.validate()
        cflags = [
            f"-DCONN_MAX={self.limits.connections}",
            f"-DEXCH_MAX={self.limits.exchanges}",
            f"-DRING_PAGES={self.limits.ring_bytes // PAGE}",
            f"-DPORT_MAX={self.limits.ports}",
            f"-I{BPF_DIR}",
            "-Wno-unused-function",
        ]
        self.bpf = BPF(src_file=str(SOURCE).encode(), cflags=cflags)
        self.to_pod = self.bpf.load_func("cv_to_pod", BPF.SCHED_CLS)
        self.from_pod = self.bpf.load_func("cv_from_pod", BPF.SCHED_CLS)
        self._parse = self.bpf.load_func("cv_parse", BPF.SCHED_CLS)
        self._chunk = self.bpf.load_func("cv_chunk", BPF.SCHED_CLS)
        self._head = self.bpf.load_func("cv_head", BPF.SCHED_CLS)
        self._lines = self.bpf.load_func("cv_lines", BPF.SCHED_CLS)
        parsers = self.bpf["parsers"]
        for index, fn in enumerate((self._parse, self._chunk, self._head, self._lines)):
            parsers[ctypes.c_int(index)] = ctypes.c_int(fn.fd)
        self.svc_ports = self.bpf["svc_ports"]
        self.egress = self.bpf["egress"]
        self.conns = self.bpf["conns"]
        self.exchanges = self.bpf["exchanges"]
        self.stats_table = self.bpf["stats"]
        self.budgets = self.bpf["budgets"]
        self.set_span_budget(self.limits.spans_per_second)
        check_layout(self.exchanges.Leaf, self.stats_table.max_entries)
        self.ring = RingBuffer(self.bpf["events"].map_fd, self.limits.ring_bytes)
        release_compiler_memory()

    @property
    def program_fds(self) -> tuple[int, ...]:
        """File descriptors of the loaded programs (for their run-time statistics)."""
        programs = (self.to_pod, self.from_pod, self._parse, self._chunk, self._head, self._lines)
        return tuple(int(fn.fd) for fn in programs)

    # -- configuration maps ------------------------------------------------------------
    def set_service_port(self, ifindex: int, port: int, proto: str, payload: bool) -> None:
        key = self.svc_ports.Key(ifindex, port, 0)
        self.svc_ports[key] = self.svc_ports.Leaf(PROTO_CODES.get(proto, records.PROTO_TCP), int(payload), 0)

    def set_egress(self, ifindex: int, ip: str, port: int, proto: str, payload: bool) -> None:
        key = self.egress.Key(ifindex, _ip_u32(ip), port, 0)
        self.egress[key] = self.egress.Leaf(PROTO_CODES.get(proto, records.PROTO_TCP), int(payload), 0)

    def clear_interface(self, ifindex: int) -> None:
        """Forget every port, egress rule, connection and exchange of one veth."""
        for table in (self.svc_ports, self.egress, self.conns):
            for key in [k for k in table if k.ifindex == ifindex]:
                table.pop(key, None)
        for key in [k for k in self.exchanges if k.c.ifindex == ifindex]:
            self.exchanges.pop(key, None)

    def ports_of(self, ifindex: int) -> dict[int, tuple[int, int]]:
        return {k.port: (v.proto, v.flags) for k, v in self.svc_ports.items() if k.ifindex == ifindex}

    def egress_of(self, ifindex: int) -> dict[tuple[str, int], tuple[int, int]]:
        return {
            (socket.inet_ntoa(k.ip.to_bytes(4, "little")), k.port): (v.proto, v.flags)
            for k, v in self.egress.items()
            if k.ifindex == ifindex
        }

    def replace_interface_config(
        self, ifindex: int, ports: dict[int, tuple[str, bool]], egress: dict[tuple[str, int], tuple[str, bool]]
    ) -> None:
        """Make the maps hold exactly these service ports and egress rules for one veth."""
        for key in [k for k in self.svc_ports if k.ifindex == ifindex and k.port not in ports]:
            self.svc_ports.pop(key, None)
        for port, (proto, payload) in ports.items():
            self.set_service_port(ifindex, port, proto, payload)
        wanted = {(_ip_u32(ip), port) for ip, port in egress}
        for key in [k for k in self.egress if k.ifindex == ifindex and (k.ip, k.port) not in wanted]:
            self.egress.pop(key, None)
        for (ip, port), (proto, payload) in egress.items():
            self.set_egress(ifindex, ip, port, proto, payload)

    def set_span_budget(self, per_second: int) -> None:
        """Emit at most ``per_second`` records a second from now on (0: no limit)."""
        limits = replace(self.limits, spans_per_second=per_second)
        limits.validate()
        self.limits = limits
        self.budgets[ctypes.c_int(0)] = self.budgets.Leaf(per_second, 0, 0)

    # -- counters and eviction ---------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Kernel counters, summed over CPUs."""
        out = {}
        for i, name in enumerate(STAT_NAMES):
            out[name] = int(sum(self.stats_table[ctypes.c_int(i)]))
        return out

    def occupancy(self) -> dict[str, int]:
        return {"connections": _count(self.conns), "exchanges": _count(self.exchanges)}

    def evict(self, exchange_timeout_ns: int, idle_conn_timeout_ns: int, now_ns: int | None = None) -> tuple[int, int]:
        """Delete exchanges whose request started more than ``exchange_timeout_ns`` ago and
        connections idle for ``idle_conn_timeout_ns``. Returns (exchanges, connections) evicted.

        A connection's inline exchange cannot be deleted on its own (the kernel writes the
        connection without a lock): a stale one goes with its connection, which the kernel
        tracks again from the connection's next request."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        stale = [k for k, v in _items(self.exchanges) if now - v.req_start_ns > exchange_timeout_ns]
        for key in stale:
            self.exchanges.pop(key, None)
        stale_inline, idle = [], []
        for key, conn in _items(self.conns):
            if conn.x_used and now - conn.x.req_start_ns > exchange_timeout_ns:
                stale_inline.append(key)
            elif now - conn.last_ns > idle_conn_timeout_ns:
                idle.append(key)
        for key in stale_inline + idle:
            self.conns.pop(key, None)
        return len(stale) + len(stale_inline), len(idle)

    def close(self) -> None:
        self.ring.close()
        self.bpf.cleanup()


def check_layout(exchange: type[ctypes.Structure], counters: int) -> None:
    """That the compiled programs' struct exchange (BCC's ctypes type of it) and counters are those
    clovisor/_spanwire was built with (``pip install -e .`` builds it from bpf/exchange.h)."""
    expected = dict(_spanwire.EXCHANGE_FIELDS) | {s.name: (s.offset, s.capacity) for s in records.STRING_SLOTS}
    differ = [name for name, place in expected.items() if _place(exchange, name) != place]
    if differ or ctypes.sizeof(exchange) != records.EXCHANGE_SIZE or counters != len(STAT_NAMES):
        raise RuntimeError(
            f"clovisor/_spanwire does not match bpf/exchange.h (fields {differ}, {ctypes.sizeof(exchange)} bytes, "
            f"{counters} counters): rebuild it (pip install -e .)"
        )


def _place(structure: type[ctypes.Structure], name: str) -> tuple[int, int] | None:
    field = getattr(structure, name, None)
    return None if field is None else (field.offset, field.size)


def release_compiler_memory() -> int:
    """Give back what compiling the programs left resident: freed heap (malloc_trim) and the
    pages of LLVM/clang code in libbcc (its executable mappings only: never written, so they
    are simply faulted in again should BCC ever run that code). Returns the bytes of code
    mappings released."""
    libc = ctypes.CDLL(None, use_errno=True)
    released = 0
    with contextlib.suppress(AttributeError):  # not glibc
        libc.malloc_trim(0)
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] != "r-xp" or not any(n in fields[5] for n in ("libbcc", "libLLVM", "libclang")):
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if madvise(start, end - start, 4) == 0:  # MADV_DONTNEED
            released += end - start
    return released


BATCH = 256  # map entries read per syscall


def _items(t: Any) -> Iterator[tuple[Any, Any]]:
    """Copies of a hash map's entries (of the ctypes types BCC made for its key and value), read a
    batch at a time into fixed buffers (BCC's own batch read sizes its buffers for the whole map:
    20 MB for the connections)."""
    from bcc.libbcc import lib

    keys, values = (t.Key * BATCH)(), (t.Leaf * BATCH)()
    token, count = ctypes.c_uint32(0), ctypes.c_uint32(0)
    first = True
    while True:
        count.value = BATCH
        res = lib.bpf_lookup_batch(t.map_fd, None if first else ctypes.byref(token), ctypes.byref(token),
                                   keys, values, ctypes.byref(count))  # fmt: skip
        err = ctypes.get_errno()
        if res != 0 and err != errno.ENOENT:
            if first:  # no batch operations on this kernel: one syscall per key
                yield from t.items()
                return
            raise OSError(err, f"reading map {t._name!r}: {os.strerror(err)}")
        for i in range(count.value):
            yield t.Key.from_buffer_copy(keys[i]), t.Leaf.from_buffer_copy(values[i])
        if res != 0:  # ENOENT: that was the last batch
            return
        first = False


def _count(table: Iterable[object]) -> int:
    return sum(1 for _ in table)


def _ip_u32(ip: str) -> int:
    """An IPv4 address as the u32 the kernel compares (network byte order in memory)."""
    if ip in ("", "0", "0.0.0.0", "*"):
        return 0
    return int.from_bytes(socket.inet_aton(ip), "little")


class _BpfProgInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("recursion_misses", ctypes.c_uint64),
        ("verified_insns", ctypes.c_uint32),
    ]


@dataclass(frozen=True)
class ProgRunStats:
    name: str
    run_time_ns: int
    run_cnt: int
    verified_insns: int


def prog_run_stats(fd: int) -> ProgRunStats:
    """run_time_ns/run_cnt of a program (non-zero only while kernel.bpf_stats_enabled=1)."""
    info = _BpfProgInfo()
    _obj_get_info(fd, info)
    return ProgRunStats(info.name.decode(), info.run_time_ns, info.run_cnt, info.verified_insns)


_BPF_OBJ_GET_INFO_BY_FD = 15
_SYS_BPF = 321


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


def _obj_get_info(fd: int, info: ctypes.Structure) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    attr = _InfoAttr(fd, ctypes.sizeof(info), ctypes.addressof(info))
    if libc.syscall(_SYS_BPF, _BPF_OBJ_GET_INFO_BY_FD, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_OBJ_GET_INFO_BY_FD failed: {err}")
