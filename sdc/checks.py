"""Validation shared by the services: ports, paths and upstream addresses that must answer."""

from __future__ import annotations

import asyncio
import os

from sdc.names import HostPort, ResolveError, Resolver, parse_host_port
from sdc.netns import Placement
from sdc.runtime import ConfigRefused

CONNECT_CHECK_TIMEOUT = 1.5


def port_field(value: str, field: str, current: int) -> int:
    """A port given as a string ("" keeps ``current``)."""
    text = value.strip()
    if not text:
        return current
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigRefused(f"{field} {value!r} is not a port number (1..65535)")
    return int(text)


def path_field(value: str, field: str, current: str) -> str:
    text = value.strip()
    if not text:
        return current
    if not text.startswith("/"):
        raise ConfigRefused(f"{field} {value!r} must start with '/'")
    return text


def host_port_field(value: str, field: str, default_port: int | None = None) -> HostPort:
    try:
        return parse_host_port(value, default_port, field)
    except ValueError as exc:
        raise ConfigRefused(str(exc)) from None


async def reachable(placement: Placement, ip: str, port: int) -> str | None:
    """None when a TCP connection to ip:port can be made from the pod, else why not."""
    loop = asyncio.get_running_loop()
    sock = placement.tcp_socket()
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), CONNECT_CHECK_TIMEOUT)
        return None
    except TimeoutError:
        return f"no answer within {CONNECT_CHECK_TIMEOUT}s"
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else str(exc)
    finally:
        sock.close()


async def resolve_reachable(
    resolver: Resolver, placement: Placement, address: HostPort, field: str
) -> tuple[list[str], str]:
    """The addresses behind ``address`` (all must accept a connection) and its service name."""
    resolver.forget(address.host)
    try:
        ips, service = await resolver.resolve_async(address.host)
    except ResolveError as exc:
        raise ConfigRefused(f"{field} {address}: {exc}") from None
    problems = await asyncio.gather(*(reachable(placement, ip, address.port) for ip in ips))
    for ip, problem in zip(ips, problems, strict=True):
        if problem:
            shown = f"{address} ({ip}:{address.port})" if ip != address.host else str(address)
            raise ConfigRefused(f"{field} {shown} is unreachable: {problem}")
    return ips, service
