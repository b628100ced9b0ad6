"""Readiness probes of the cluster's parts; each raises ProbeFailed saying why not."""

from __future__ import annotations

import random
import socket
import struct
import warnings
from pathlib import Path

import requests

from stack.cluster.layout import NODE_NAME
from stack.probes import ProbeFailed


def https_ok(url: str, ca: Path | None = None, cert: tuple[Path, Path] | None = None) -> None:
    """An HTTPS GET answered 200; without ``ca`` the server's (self-signed) certificate is not checked."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            response = requests.get(url, timeout=3, verify=str(ca) if ca else False,
                                    cert=(str(cert[0]), str(cert[1])) if cert else None)  # fmt: skip
        except requests.RequestException as exc:
            raise ProbeFailed(f"GET {url} failed: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise ProbeFailed(f"GET {url} answered {response.status_code}")


def unix_socket(path: Path) -> None:
    """A connection to the unix socket ``path`` is accepted."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise ProbeFailed(f"{path}: {exc.strerror or exc}") from None


def node_ready(api_url: str, ca: Path, cert: tuple[Path, Path]) -> None:
    """The node's Ready condition is True."""
    url = f"{api_url}/api/v1/nodes/{NODE_NAME}"
    try:
        response = requests.get(url, timeout=3, verify=str(ca), cert=(str(cert[0]), str(cert[1])))
    except requests.RequestException as exc:
        raise ProbeFailed(f"GET {url} failed: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise ProbeFailed(f"node {NODE_NAME} not registered yet ({response.status_code})")
    conditions = {c["type"]: c for c in response.json().get("status", {}).get("conditions", [])}
    ready = conditions.get("Ready", {})
    if ready.get("status") != "True":
        raise ProbeFailed(f"node {NODE_NAME} not Ready: {ready.get('message', 'no Ready condition yet')}")


def dns_a(server: str, name: str, timeout: float = 2.0, port: int = 53) -> list[str]:
    """The IPv4 addresses a DNS server answers for ``name`` (one UDP query)."""
    query_id = random.randrange(1 << 16)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(packet, (server, port))
            reply = sock.recv(4096)
        except OSError as exc:
            raise ProbeFailed(f"DNS query for {name} to {server} failed: {exc.strerror or exc}") from None
    answer_id, flags, _, answers, _, _ = struct.unpack("!HHHHHH", reply[:12])
    if answer_id != query_id:
        raise ProbeFailed(f"DNS reply from {server} answers another query")
    if flags & 0xF:
        raise ProbeFailed(f"DNS server {server} answered {name} with rcode {flags & 0xF}")
    offset, found = 12 + len(question) + 4, []
    for _ in range(answers):
        offset = _skip_name(reply, offset)
        rtype, _, _, length = struct.unpack("!HHIH", reply[offset : offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            found.append(socket.inet_ntoa(reply[offset : offset + 4]))
        offset += length
    return found


def _skip_name(packet: bytes, offset: int) -> int:
    while packet[offset]:
        if packet[offset] & 0xC0 == 0xC0:
            return offset + 2
        offset += packet[offset] + 1
    return offset + 1


def dns_answers(server: str, name: str, expected: str) -> None:
    """The cluster DNS resolves ``name`` to ``expected``."""
    found = dns_a(server, name)
    if expected not in found:
        raise ProbeFailed(f"{server} resolves {name} to {found or 'nothing'}, not {expected}")
