"""Clients outside the chain, each with an address of its own (tests, demos).

The IDS blocks a client by its address, so telling clients apart needs more than the host's
one address. In loopback mode any 127.x address will do. In namespace mode the clients live in
a namespace of their own (``<tag>-clients``) holding several addresses, behind a veth like a
pod's; requests run on a thread inside it.
"""

from __future__ import annotations

import http.client
import subprocess
from dataclasses import dataclass
from urllib.parse import urlsplit

from clover.config import Config
from sdc import netns, topology


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def _fetch(source: str, url: str, method: str, headers: dict[str, str], body: bytes | None, timeout: float) -> Answer:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout,
                                      source_address=(source, 0))  # fmt: skip
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


class ExternalClients:
    """``count`` client addresses; use as a context manager (the namespace is removed after)."""

    def __init__(self, cfg: Config, count: int = 2):
        self.cfg = cfg
        self.ips = topology.client_ips(cfg)[:count]
        self.netns: str | None = None
        self.veth: str | None = None
        if topology.mode(cfg) == "netns":
            self.netns = f"{cfg.sdc_tag}-clients"
            self.veth = f"{cfg.sdc_tag}-clients"
            netns.create_pod_network(self.netns, self.veth, self.ips[0], topology.gateway_ip(cfg), tuple(self.ips[1:]))
        self.thread = netns.NamespaceThread(self.netns)

    def request(
        self,
        index: int,
        url: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 15.0,
    ) -> Answer:
        """One request from client ``index`` (a new connection each time)."""
        return self.thread.run(_fetch, self.ips[index], url, method, headers or {}, body, timeout)

    def ping(self, index: int, target: str) -> None:
        """One ICMP echo from client ``index`` (namespace mode only)."""
        if self.netns is None:
            raise RuntimeError("ping from a client address needs namespace mode")
        subprocess.run(
            ["ip", "netns", "exec", self.netns, "ping", "-c", "1", "-W", "2", "-I", self.ips[index], target],
            check=True,
            capture_output=True,
            timeout=10,
        )

    def connect(self, index: int, target: str, port: int) -> bool:
        """Open (and close) one TCP connection from client ``index``; False when refused."""

        def attempt() -> bool:
            import socket

            with socket.socket() as sock:
                sock.settimeout(3)
                sock.bind((self.ips[index], 0))
                try:
                    sock.connect((target, port))
                    return True
                except ConnectionRefusedError:
                    return False

        return self.thread.run(attempt)

    def close(self) -> None:
        self.thread.close()
        if self.netns and self.veth:
            netns.delete_pod_network(self.netns, self.veth)

    def __enter__(self) -> ExternalClients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
