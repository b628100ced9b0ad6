"""Network-namespace helpers: the host-side veth of a namespace, and what listens in it."""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkError

NETNS_DIRS = (Path("/run/netns"), Path("/var/run/netns"))
_CLONE_NEWNET = 0x40000000
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


def veth_for_ip(ip: str) -> str | None:
    """The host-side veth leading to ``ip``: from the route (routed CNIs), else by finding the
    named network namespace that holds the address (bridged CNIs: containerd, CRI-O)."""
    with IPRoute() as ipr:
        try:
            route = ipr.route("get", dst=ip)[0]
            oif = route.get_attr("RTA_OIF")
            link = ipr.get_links(oif)[0]
            info = link.get_attr("IFLA_LINKINFO")
            if info is not None and info.get_attr("IFLA_INFO_KIND") == "veth":
                return str(link.get_attr("IFLA_IFNAME"))
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
