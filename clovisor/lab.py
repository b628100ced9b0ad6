"""A small local network of "pods" for Clovisor's tests and benchmark (root only).

A Linux bridge in the root namespace plays the node's CNI bridge; each pod is a network
namespace whose ``eth0`` is one end of a veth pair, the other end (the pod's host-side veth,
which Clovisor traces) enslaved to the bridge. The bridge holds the first address of the
subnet, so processes in the root namespace can reach every pod, and pods reach each other
through the bridge. Everything is removed by ``close()``.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time
from dataclasses import dataclass, field
from io import BufferedIOBase
from pathlib import Path

from clover.config import Config
from clover.pods import LocalPod, register, unregister


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@dataclass
class LabPod:
    name: str
    netns: str
    ip: str
    host_veth: str
    ports: dict[str, int] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    namespace: str = "default"
    service: str = ""

    def exec(self, *argv: str) -> list[str]:
        """The argv that runs a command inside the pod's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def local_pod(self) -> LocalPod:
        return LocalPod(
            name=self.name,
            service=self.service or self.name,
            ip=self.ip,
            ports=dict(self.ports),
            namespace=self.namespace,
            labels=dict(self.labels),
            netns=self.netns,
            host_veth=self.host_veth,
        )


class Lab:
    """A bridge and pods on ``subnet`` (a /24), names prefixed with ``prefix`` (at most 6 chars)."""

    def __init__(self, prefix: str, subnet: str) -> None:
        if len(prefix) > 6:
            raise ValueError("prefix must be at most 6 characters (interface names are limited to 15)")
        self.prefix = prefix
        self.net = ipaddress.ip_network(subnet)
        self.bridge = f"{prefix}br"
        self.gateway = str(self.net.network_address + 1)
        self.pods: dict[str, LabPod] = {}
        self._registered: list[tuple[Config, str]] = []
        self.close()  # a previous run killed half-way
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/{self.net.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add_pod(
        self,
        name: str,
        ports: dict[str, int] | None = None,
        labels: dict[str, str] | None = None,
        namespace: str = "default",
        service: str = "",
    ) -> LabPod:
        index = len(self.pods) + 2
        netns = f"{self.prefix}-{name}"
        host_veth = f"{self.prefix}v{index}"
        ip = str(self.net.network_address + index)
        _ip("netns", "add", netns)
        _ip("link", "add", host_veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", host_veth, "master", self.bridge, "up")
        _ip("-n", netns, "addr", "add", f"{ip}/{self.net.prefixlen}", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "route", "add", "default", "via", self.gateway)
        pod = LabPod(name, netns, ip, host_veth, dict(ports or {}), dict(labels or {}), namespace, service)
        self.pods[name] = pod
        return pod

    def register(self, cfg: Config, pod: LabPod) -> None:
        """Register the pod in the local pod registry (as the sample chain does)."""
        register(cfg, pod.local_pod())
        self._registered.append((cfg, pod.name))

    def close(self) -> None:
        for cfg, name in self._registered:
            unregister(cfg, name)
        self._registered.clear()
        for netns in _ip("netns", "list", check=False).stdout.split("\n"):
            name = netns.split(" ")[0]
            if name.startswith(f"{self.prefix}-"):
                _ip("netns", "del", name, check=False)
        for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
            ifname = line.split(":")[1].strip().split("@")[0]
            if ifname.startswith(f"{self.prefix}v") or ifname == self.bridge:
                _ip("link", "del", ifname, check=False)
        self.pods.clear()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def require_root() -> None:
    if os.geteuid() != 0:
        raise PermissionError("network namespaces and BPF programs need root")


# Debian's nginx as a pod's server with no tracer: one worker, every path answered 200 "ok\n",
# its request counter (stub_status) at /status.
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen {port} reuseport;
        location /status {{ stub_status; }}
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def start_nginx(pod: LabPod, directory: Path, port: int = 80) -> subprocess.Popen[bytes]:
    """nginx (the Debian package's) serving in ``pod`` on ``port``, its configuration, pid file and
    error log in ``directory``; returns once it listens (nginx writes its pid file after binding)."""
    pid_file = directory / "nginx.pid"
    pid_file.unlink(missing_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=directory, port=port))
    nginx = subprocess.Popen(pod.exec("nginx", "-c", str(conf)))
    deadline = time.monotonic() + 10
    while not pid_file.exists():
        if nginx.poll() is not None or time.monotonic() > deadline:
            nginx.kill()
            error_log = directory / "error.log"
            raise RuntimeError(
                f"nginx did not start in {pod.netns}: {error_log.read_text() if error_log.exists() else ''}"
            )
        time.sleep(0.05)
    return nginx


# -- a scriptable HTTP/1.1 server for the lab's pods -------------------------------------------
#
# Paths: /bytes/<n> (n-byte body), /status/<code>, /chunked/<size>/<count> (chunked body),
# /close/<n> (no Content-Length: the body ends with the connection), /sleep/<ms>; anything else
# answers 200 "ok\n". POST bodies (Content-Length or chunked) are read and their size echoed.
# Keep-alive unless the client says "Connection: close" or speaks HTTP/1.0; pipelined requests
# are answered in order.


def _read_body(rfile: BufferedIOBase, headers: dict[str, str]) -> int:
    if headers.get("transfer-encoding", "").lower().endswith("chunked"):
        total = 0
        while True:
            size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return total
            rfile.read(size + 2)
            total += size
    length = int(headers.get("content-length", "0") or 0)
    if length:
        rfile.read(length)
    return length


def _respond(method: str, path: str, version: str, headers: dict[str, str], body_size: int) -> tuple[bytes, bool]:
    """The response bytes, and whether to close the connection after them."""
    import time

    close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
    parts = [p for p in path.split("?")[0].split("/") if p]
    status, reason, body, extra = 200, "OK", b"ok\n", b""
    if method == "POST":
        body = f"received {body_size}\n".encode()
    if parts[:1] == ["bytes"] and len(parts) == 2:
        body = b"x" * int(parts[1])
    elif parts[:1] == ["status"] and len(parts) == 2:
        status = int(parts[1])
        reason = {200: "OK", 201: "Created", 204: "No Content", 404: "Not Found", 418: "I'm a teapot",
                  500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Status")  # fmt: skip
        body = b"" if status in (204, 304) else f"status {status}\n".encode()
    elif parts[:1] == ["sleep"] and len(parts) == 2:
        time.sleep(int(parts[1]) / 1000)
    elif parts[:1] == ["chunked"] and len(parts) == 3:
        size, count = int(parts[1]), int(parts[2])
        chunk = f"{size:x}\r\n".encode() + b"c" * size + b"\r\n"
        payload = b"" if method == "HEAD" else chunk * count + b"0\r\n\r\n"
        head = f"{version} 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        return head + payload, close
    elif parts[:1] == ["close"] and len(parts) == 2:
        head = f"{version} 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n".encode()
        return head + (b"" if method == "HEAD" else b"z" * int(parts[1])), True
    if close:
        extra = b"Connection: close\r\n"
    head = (
        (
            f"{version} {status} {reason}\r\nServer: clovisor-lab\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode()
        + extra
        + b"\r\n"
    )
    if method == "HEAD" or status in (204, 304):
        if status in (204, 304):
            head = f"{version} {status} {reason}\r\nServer: clovisor-lab\r\n".encode() + extra + b"\r\n"
        return head, close
    return head + body, close


def serve_http(port: int) -> None:
    """Serve the lab's HTTP paths on ``port`` until killed."""
    import socketserver

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    continue
                method, path, version = line.decode("latin-1").split()
                headers: dict[str, str] = {}
                while True:
                    h = self.rfile.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = h.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                size = _read_body(self.rfile, headers)
                data, close = _respond(method, path, version, headers, size)
                self.wfile.write(data)
                self.wfile.flush()
                if close:
                    return

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    with Server(("0.0.0.0", port), Handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve_http(int(sys.argv[2]))
    else:
        sys.exit("usage: python -m clovisor.lab serve PORT")
