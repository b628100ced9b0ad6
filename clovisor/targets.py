"""What Clovisor traces: pods, their host-side veths and the protocol of each port."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Port-name prefixes (Istio's convention, `<protocol>[-<suffix>]`) that Clovisor traces at the
# connection level when no plugin parses them. "http" is parsed in the kernel.
TCP_PROTOCOLS = frozenset({"tcp", "http2", "grpc", "grpc-web", "https", "tls", "mongo", "mysql", "redis"})


def port_protocol(port_name: str) -> str | None:
    """``http``, ``http-8080`` -> ``http``; ``tcp-db`` -> ``tcp``; unnamed -> None (not traced)."""
    name = port_name.strip().lower()
    if not name:
        return None
    return name.split("-", 1)[0]


@dataclass(frozen=True)
class PodTarget:
    """A monitored pod: where to attach and which ports carry which protocol."""

    name: str
    namespace: str
    service: str
    ip: str
    host_veth: str
    ports: Mapping[int, str]  # container port -> protocol
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def traced_ports(named_ports: Mapping[str, int], plugin_protocols: frozenset[str]) -> dict[int, str]:
    """Port number -> protocol for the ports Clovisor can trace."""
    out: dict[int, str] = {}
    for name, port in named_ports.items():
        proto = port_protocol(name)
        if proto is None:
            continue
        if proto == "http" or proto in plugin_protocols or proto in TCP_PROTOCOLS:
            out[int(port)] = proto
    return out
