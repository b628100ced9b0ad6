"""Network-namespace helpers: the host-side veth of a namespace, and what listens in it."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkError

NETNS_DIRS = (Path("/run/netns"), Path("/var/run/netns"))
_CLONE_NEWNET = 0x40000000
DISCARD_PORT = 9
T = TypeVar("T")


def named_namespaces(pattern: str = "*") -> list[str]:
    names: set[str] = set()
    for directory in NETNS_DIRS:
        if directory.is_dir():
            names.update(p.name for p in directory.iterdir() if fnmatch.fnmatch(p.name, pattern))
    return sorted(names)


def _netns_path(name: str) -> str:
    for directory in NETNS_DIRS:
        if (directory / name).exists():
            return str(directory / name)
    raise FileNotFoundError(errno.ENOENT, f"no network namespace named {name!r}")


def in_netns(name: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread that has entered the named network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(_netns_path(name), os.O_RDONLY)
        try:
            if libc.setns(target, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {name} failed")
            try:
                result.append(fn())
            finally:
                libc.setns(own, _CLONE_NEWNET)
        except BaseException as exc:  # handed to the caller
            failure.append(exc)
        finally:
            os.close(own)
            os.close(target)

    thread = threading.Thread(target=run, name=f"netns-{name}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def listening_tcp_ports() -> set[int]:
    """TCP ports in LISTEN state in the calling thread's network namespace."""
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/thread-self/net/{table}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def veth_peer(netns: str) -> tuple[str, str] | None:
    """(host-side veth name, IPv4 address) of the first veth in ``netns`` with an address."""
    with NetNS(netns) as ns:
        addrs = {a["index"]: a.get_attr("IFA_ADDRESS") for a in ns.get_addr(family=socket.AF_INET)}
        for link in ns.get_links():
            info = link.get_attr("IFLA_LINKINFO")
            if info is None or info.get_attr("IFLA_INFO_KIND") != "veth":
                continue
            peer = link.get_attr("IFLA_LINK")
            ip = addrs.get(link["index"])
            if peer and ip:
                with IPRoute() as ipr:
                    try:
                        host = ipr.get_links(peer)[0].get_attr("IFLA_IFNAME")
                    except NetlinkError:
                        continue
                return host, ip
    return None


def _kind(link: Any) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")
    return None if info is None else str(info.get_attr("IFLA_INFO_KIND"))


def bridge_port_for_ip(ipr: IPRoute, bridge: int, ip: str) -> str | None:
    """The veth of ``bridge`` behind which ``ip`` lives: its MAC from the bridge's neighbour
    table, then the bridge port that learnt that MAC (its forwarding database). Reads only the
    host's tables, so it needs no capability and enters no namespace. When the host has not
    resolved ``ip`` yet, one UDP datagram to its discard port makes it ARP for the next call."""
    macs = {
        str(n.get_attr("NDA_LLADDR")).lower()
        for n in ipr.get_neighbours(family=socket.AF_INET, dst=ip, ifindex=bridge)
        if n.get_attr("NDA_LLADDR")
    }
    if not macs:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nudge, contextlib.suppress(OSError):
            nudge.sendto(b"", (ip, DISCARD_PORT))
        return None
    for entry in ipr.get_neighbours(family=socket.AF_BRIDGE):
        if str(entry.get_attr("NDA_LLADDR") or "").lower() not in macs or entry.get_attr("NDA_MASTER") != bridge:
            continue
        port = ipr.get_links(entry["ifindex"])[0]
        if _kind(port) == "veth":
            return str(port.get_attr("IFLA_IFNAME"))
    return None


def veth_for_ip(ip: str) -> str | None:
    """The host-side veth leading to ``ip``: from the route (routed CNIs), from the bridge's
    neighbour and forwarding tables (bridged CNIs), else by finding the named network namespace
    that holds the address."""
    with IPRoute() as ipr:
        try:
            route = ipr.route("get", dst=ip)[0]
            oif = route.get_attr("RTA_OIF")
            link = ipr.get_links(oif)[0]
            if _kind(link) == "veth":
                return str(link.get_attr("IFLA_IFNAME"))
            if _kind(link) == "bridge":
                port = bridge_port_for_ip(ipr, oif, ip)
                if port:
                    return port
        except (NetlinkError, IndexError):
            pass
    for name in named_namespaces():
        try:
            found = veth_peer(name)
        except (OSError, NetlinkError):
            continue
        if found and found[1] == ip:
            return found[0]
    return None


def ip_u32(ip: str) -> int:
    return int(struct.unpack("!I", socket.inet_aton(ip))[0])
