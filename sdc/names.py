"""Service names to addresses, Kubernetes style, through the local pod registry.

``http-lb`` names a service: every registered pod of it (v1 and v2). ``http-lb-v2`` (or
``http-lb-v2.default``, ``...svc.cluster.local``) names one pod. A literal IP is itself, and
any other name goes to the system resolver, so the chain can also point at real hosts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass

from clover import pods
from clover.config import Config


class ResolveError(LookupError):
    """The name is neither a registered pod or service nor resolvable; the message says so."""


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_host_port(value: str, default_port: int | None = None, field: str = "address") -> HostPort:
    """``host:port`` (an ``http://`` prefix and a trailing path are accepted)."""
    text = value.strip()
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme != "http":
            raise ValueError(f"{field} {value!r}: only http:// is supported")
    text = text.split("/", 1)[0]
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, ""
    if not host:
        raise ValueError(f"{field} {value!r} has no host")
    if not port:
        if default_port is None:
            raise ValueError(f"{field} {value!r} must look like host:port")
        return HostPort(host, default_port)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{field} {value!r}: port {port!r} is not in 1..65535")
    return HostPort(host, int(port))


def short_name(host: str) -> str:
    """``http-lb-v2.default.svc.cluster.local`` -> ``http-lb-v2``; IPs are kept whole."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        return host.split(".", 1)[0]


def registry_lookup(cfg: Config, host: str) -> tuple[list[str], str | None]:
    """Addresses of the registered pods ``host`` names, and the service they belong to."""
    short, _, rest = host.partition(".")
    namespace = rest.split(".")[0] if rest else None
    by_name = []
    by_service = []
    for pod in pods.list_pods(cfg):
        if namespace and pod.namespace != namespace:
            continue
        if pod.name == short:
            by_name.append(pod)
        elif pod.service == short:
            by_service.append(pod)
    chosen = by_name or sorted(by_service, key=lambda p: p.name)
    if not chosen:
        return [], None
    return [p.ip for p in chosen], chosen[0].service


def in_namespace(cfg: Config, host: str) -> str:
    """``host`` as a client outside the chain's namespace dials it: a short name the local pod
    registry does not know gets ``cfg.sdc_namespace`` when one is set (``snort-ids`` ->
    ``snort-ids.default`` for the controller in clover-system); anything else is kept."""
    if cfg.sdc_namespace and "." not in host and not registry_lookup(cfg, host)[0]:
        return f"{host}.{cfg.sdc_namespace}"
    return host


class Resolver:
    """Cached resolution (the registry is re-read at most every ``ttl`` seconds per name)."""

    def __init__(self, cfg: Config, ttl: float = 2.0):
        self.cfg = cfg
        self.ttl = ttl
        self._cache: dict[str, tuple[float, list[str], str]] = {}

    def resolve(self, host: str) -> tuple[list[str], str]:
        """(addresses, service name) for ``host``; raises ResolveError."""
        now = time.monotonic()
        hit = self._cache.get(host)
        if hit and now - hit[0] < self.ttl:
            return hit[1], hit[2]
        addresses, service = self._lookup(host)
        self._cache[host] = (now, addresses, service)
        return addresses, service

    def _lookup(self, host: str) -> tuple[list[str], str]:
        try:
            ipaddress.IPv4Address(host)
            return [host], host
        except ValueError:
            pass
        addresses, service = registry_lookup(self.cfg, host)
        if addresses and service:
            return addresses, service
        try:
            infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            raise ResolveError(
                f"{host!r} is neither a registered local pod or service nor a resolvable host name"
            ) from None
        return sorted({str(info[4][0]) for info in infos}), short_name(host)

    def forget(self, host: str) -> None:
        """Drop a cached answer (a configuration change resolves afresh)."""
        self._cache.pop(host, None)

    async def resolve_async(self, host: str) -> tuple[list[str], str]:
        hit = self._cache.get(host)
        if hit and time.monotonic() - hit[0] < self.ttl:
            return hit[1], hit[2]
        return await asyncio.get_running_loop().run_in_executor(None, self.resolve, host)
