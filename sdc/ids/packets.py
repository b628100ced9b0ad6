"""Packet capture for the IDS (root only): an AF_PACKET socket on the pod's interface.

In namespace mode the socket lives in the snort-ids pod's namespace on its ``eth0`` and sees
both directions. In loopback mode it sits on ``lo``, where every packet appears twice (as
sent and as received): only received copies are used, and a classic BPF filter keeps only
the IDS's own address. Either way the filter drops, in the kernel, the TCP flows of the HTTP
sink (those requests are inspected whole, once each, from the proxy's copies) and of the IDS's
own gRPC control port (its management traffic, which a deployment would also filter out).
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
from dataclasses import dataclass

from sdc.ids.rules import Subject

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
LINKTYPE_ETHERNET = 1


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


# classic BPF opcodes
LD_H_ABS, LD_W_ABS, LD_B_ABS, LD_H_IND = 0x28, 0x20, 0x30, 0x48
LDX_B_MSH = 0xB1
JEQ_K, JSET_K = 0x15, 0x45
RET_K = 0x06


@dataclass(frozen=True)
class _Ins:
    code: int
    k: int = 0
    jt: str = ""
    jf: str = ""
    label: str = ""


def capture_filter(skip_ports: tuple[int, ...], only_ip: str | None = None) -> list[tuple[int, int, int, int]]:
    """cBPF: IPv4 only; optionally only packets to or from ``only_ip``; no TCP segment from
    or to one of ``skip_ports``. Returns (code, jt, jf, k) instructions."""
    program = [_Ins(LD_H_ABS, 12), _Ins(JEQ_K, ETH_P_IP, jf="drop")]
    if only_ip is not None:
        ip_value = int(ipaddress.IPv4Address(only_ip))
        program += [
            _Ins(LD_W_ABS, 26),
            _Ins(JEQ_K, ip_value, jt="ipok"),
            _Ins(LD_W_ABS, 30),
            _Ins(JEQ_K, ip_value, jt="ipok", jf="drop"),
        ]
    program += [
        _Ins(LD_B_ABS, 23, label="ipok"),  # IP protocol
        _Ins(JEQ_K, 6, jf="accept"),  # not TCP: keep
        _Ins(LD_H_ABS, 20),
        _Ins(JSET_K, 0x1FFF, jt="accept"),  # a later fragment: no ports to look at
        _Ins(LDX_B_MSH, 14),  # X = IP header length
        _Ins(LD_H_IND, 14),  # source port
        *(_Ins(JEQ_K, port, jt="drop") for port in skip_ports),
        _Ins(LD_H_IND, 16),  # destination port
        *(_Ins(JEQ_K, port, jt="drop") for port in skip_ports),
        _Ins(RET_K, 0xFFFF),
        _Ins(RET_K, 0xFFFF, label="accept"),
        _Ins(RET_K, 0, label="drop"),
    ]
    labels = {ins.label: i for i, ins in enumerate(program) if ins.label}

    def offset(label: str, here: int) -> int:
        return labels[label] - here - 1 if label else 0

    return [(ins.code, offset(ins.jt, i), offset(ins.jf, i), ins.k) for i, ins in enumerate(program)]


def open_capture(interface: str, skip_ports: tuple[int, ...], only_ip: str | None = None) -> socket.socket:
    """A non-blocking AF_PACKET socket on ``interface`` with the capture filter attached
    (call it inside the namespace the interface lives in)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        instructions = capture_filter(skip_ports, only_ip)
        array = (_SockFilter * len(instructions))(*[_SockFilter(*ins) for ins in instructions])
        prog = _SockFprog(len(instructions), ctypes.cast(array, ctypes.POINTER(_SockFilter)))
        sock.setsockopt(
            socket.SOL_SOCKET, SO_ATTACH_FILTER, ctypes.string_at(ctypes.addressof(prog), ctypes.sizeof(prog))
        )
        sock.bind((interface, ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        # Packets that arrived before the filter was attached may be queued: drain them.
        sock.setblocking(False)
        while True:
            try:
                sock.recv(65535)
            except BlockingIOError:
                break
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class Frame:
    """A decoded Ethernet/IPv4 frame."""

    data: bytes
    subject: Subject
    proto_number: int


def decode(frame: bytes) -> Frame | None:
    """Ethernet + IPv4 + TCP/UDP/ICMP -> a rule subject; None for anything else."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ip_start = 14
    version_ihl = frame[ip_start]
    if version_ihl >> 4 != 4:
        return None
    ihl = (version_ihl & 0x0F) * 4
    total = struct.unpack_from("!H", frame, ip_start + 2)[0]
    proto = frame[ip_start + 9]
    src = ipaddress.IPv4Address(frame[ip_start + 12 : ip_start + 16])
    dst = ipaddress.IPv4Address(frame[ip_start + 16 : ip_start + 20])
    l4 = ip_start + ihl
    end = min(len(frame), ip_start + total)
    sport = dport = 0
    flags = 0
    itype = icode = -1
    if proto == 6 and end - l4 >= 20:
        sport, dport = struct.unpack_from("!HH", frame, l4)
        offset = (frame[l4 + 12] >> 4) * 4
        flags = frame[l4 + 13]
        payload = frame[l4 + offset : end]
        name = "tcp"
    elif proto == 17 and end - l4 >= 8:
        sport, dport = struct.unpack_from("!HH", frame, l4)
        payload = frame[l4 + 8 : end]
        name = "udp"
    elif proto == 1 and end - l4 >= 4:
        itype, icode = frame[l4], frame[l4 + 1]
        payload = frame[l4 + 8 : end]
        name = "icmp"
    else:
        return None
    subject = Subject(
        name, src, sport, dst, dport, {"raw": payload}, tcp_flags=flags, icmp_type=itype, icmp_code=icode,
        payload_size=len(payload),
    )  # fmt: skip
    return Frame(bytes(frame), subject, proto)
