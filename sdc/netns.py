"""Pod networking: a network namespace with a veth pair per pod (root), or a loopback address.

In namespace mode a pod's process stays in the host's namespace (so it reaches Redis, the
trace backend and its own stats port on 127.0.0.1) and creates only its pod-facing sockets
inside the pod's namespace: listeners and connections to other pods. ``setns`` is per thread,
so the calling thread enters the namespace just long enough to create the socket; a socket
keeps the namespace it was created in.

Routing: the pod has ``<ip>/32`` on its ``eth0`` and a default route via the gateway address,
which the host puts on every host-side veth; the host routes ``<ip>/32`` to the pod's veth and
forwards between pods (forwarding is on for the host-side veths only, not machine-wide).
Traffic between pods therefore crosses both pods' host-side veths, which is where Clovisor
attaches.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
POD_IFNAME = "eth0"

_libc = ctypes.CDLL(None, use_errno=True)
_T = TypeVar("_T")


LISTEN_BACKLOG = 1024  # connections the kernel holds for a pod's listener before it accepts them


class NetnsError(RuntimeError):
    """A namespace, veth or route could not be set up; the message says which command failed."""


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one iproute2 command."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and done.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def link_exists(ifname: str) -> bool:
    return Path("/sys/class/net", ifname).exists()


def enable_forwarding(host_veth: str) -> None:
    """Let the host forward what a pod sends to other pods. IPv4 forwards a packet when its
    input device has forwarding on, so only the pods' host-side veths get it, not the machine."""
    Path("/proc/sys/net/ipv4/conf", host_veth, "forwarding").write_text("1\n")


def restore_forwarding(host_veth: str) -> bool:
    """Turn the veth's forwarding back on if something turned it off; True when it had to.

    Changing ``net.ipv4.ip_forward`` (a Kubernetes node stopping sets it back to 0) writes the
    new value into every interface's ``forwarding``: the pods then stop reaching each other."""
    flag = Path("/proc/sys/net/ipv4/conf", host_veth, "forwarding")
    if flag.read_text().strip() == "1":
        return False
    flag.write_text("1\n")
    return True


def delete_pod_network(netns: str, host_veth: str) -> None:
    """Remove a pod's namespace and veth pair (either may already be gone)."""
    if exists(netns):
        ip("netns", "del", netns, check=False)
    if link_exists(host_veth):
        ip("link", "del", host_veth, check=False)


def create_pod_network(netns: str, host_veth: str, pod_ip: str, gateway: str, extra_ips: tuple[str, ...] = ()) -> None:
    """A namespace whose ``eth0`` has ``pod_ip`` (and ``extra_ips``), routed through ``host_veth``.

    A namespace or veth left behind by a killed pod of the same name is removed first."""
    delete_pod_network(netns, host_veth)
    try:
        ip("netns", "add", netns)
        ip("link", "add", host_veth, "type", "veth", "peer", "name", POD_IFNAME, "netns", netns)
        ip("addr", "add", f"{gateway}/32", "dev", host_veth)
        ip("link", "set", host_veth, "up")
        enable_forwarding(host_veth)
        ip("-n", netns, "link", "set", "lo", "up")
        for address in (pod_ip, *extra_ips):
            ip("-n", netns, "addr", "add", f"{address}/32", "dev", POD_IFNAME)
        ip("-n", netns, "link", "set", POD_IFNAME, "up")
        ip("-n", netns, "route", "add", gateway, "dev", POD_IFNAME, "scope", "link")
        ip("-n", netns, "route", "add", "default", "via", gateway, "dev", POD_IFNAME)
        for address in (pod_ip, *extra_ips):
            ip("route", "replace", f"{address}/32", "dev", host_veth)
    except BaseException:
        delete_pod_network(netns, host_veth)
        raise


@dataclass
class Placement:
    """Where a pod's sockets live: its address, and its namespace when it has one."""

    ip: str
    netns: str | None = None
    _pod_fd: int | None = None
    _host_fd: int | None = None

    def open(self) -> None:
        if self.netns and self._pod_fd is None:
            self._host_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            self._pod_fd = os.open(NETNS_DIR / self.netns, os.O_RDONLY | os.O_CLOEXEC)

    def close(self) -> None:
        for fd in (self._pod_fd, self._host_fd):
            if fd is not None:
                os.close(fd)
        self._pod_fd = self._host_fd = None

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """Run the body with the calling thread in the pod's namespace (a no-op without one).

        The body must not await: other coroutines would run in the pod's namespace."""
        if self._pod_fd is None or self._host_fd is None:
            yield
            return
        _setns(self._pod_fd)
        try:
            yield
        finally:
            _setns(self._host_fd)

    def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        with self.inside():
            return fn(*args)

    def tcp_socket(self) -> socket.socket:
        """A non-blocking TCP socket in the pod's namespace, bound to the pod's address."""
        with self.inside():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.ip, 0))
        except BaseException:
            sock.close()
            raise
        return sock

    def listener(self, port: int, backlog: int = LISTEN_BACKLOG) -> socket.socket:
        """A listening TCP socket on the pod's address."""
        with self.inside():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.ip, port))
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock


class NamespaceThread:
    """A worker thread living in another network namespace: blocking network code (clients in
    tests and tools, ``requests``, ``socket``) run through it uses that namespace."""

    def __init__(self, netns: str | None):
        self.netns = netns
        self._ready = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, initializer=self._enter)

    def _enter(self) -> None:
        if self.netns:
            fd = os.open(NETNS_DIR / self.netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)

    def run(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        return self._pool.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
