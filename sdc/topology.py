"""The pods of the sample chain: names, roles, addresses, ports and interface names.

Everything here is derived from the configuration, so the launcher, the pods themselves, the
tests and the benchmark agree on where each pod lives without asking each other.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

from clover.config import Config

NAMESPACE = "default"
CLUSTER_DOMAIN = "svc.cluster.local"

HTTP_PORT = 9180
GRPC_PORT = 50054
IDS_GRPC_PORT = 50052
IDS_HTTP_PORT = 80
# Without root a pod cannot bind port 80; the IDS sink then listens here instead.
IDS_HTTP_PORT_UNPRIVILEGED = 8080
WAF_HTTP_PORT = 80
WAF_HTTP_PORT_UNPRIVILEGED = 8080

NETNS_SUBNET = "10.177.0.0/24"
LOOPBACK_SUBNET = "127.177.0.0/24"

GATEWAY_HOST = 1  # host-side address of every veth (netns mode): the pods' default gateway
CLIENT_HOSTS = range(200, 210)  # addresses ExternalClients may use

PROXY = "proxy"
LB = "lb"
SERVER = "server"
IDS = "ids"
WAF = "waf"


@dataclass(frozen=True)
class PodSpec:
    """One pod of the chain."""

    name: str
    service: str
    kind: str
    index: int
    host: int
    abbrev: str
    version: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def fqdn(self) -> str:
        return f"{self.service}.{NAMESPACE}.{CLUSTER_DOMAIN}"


def _pods() -> list[PodSpec]:
    pods = [PodSpec(f"clover-server{i}", f"clover-server{i}", SERVER, 2 + i, 20 + i, f"server{i}") for i in range(1, 6)]
    pods += [
        PodSpec(f"http-lb-{v}", "http-lb", LB, 1 if v == "v1" else 2, 10 + int(v[1]), f"lb-{v}", version=v)
        for v in ("v1", "v2")
    ]
    pods.append(PodSpec("snort-ids", "snort-ids", IDS, 8, 30, "snort"))
    pods.append(PodSpec("modsecurity-crs", "modsecurity-crs", WAF, 9, 40, "waf"))
    pods.append(PodSpec("proxy-access-control", "proxy-access-control", PROXY, 0, 10, "proxy"))
    for i, pod in enumerate(pods):
        labels = {"app": pod.service}
        if pod.version:
            labels["version"] = pod.version
        pods[i] = PodSpec(**{**pod.__dict__, "labels": labels})
    return pods


# Start order: servers, load balancers, the IDS, the WAF, then the proxy that calls them all.
POD_SPECS: tuple[PodSpec, ...] = tuple(_pods())
POD_NAMES: tuple[str, ...] = tuple(p.name for p in POD_SPECS)
STATS_PORT_COUNT = len(POD_SPECS)


class UnknownPod(LookupError):
    """Not a pod of the sample chain."""


def spec(name: str) -> PodSpec:
    for pod in POD_SPECS:
        if pod.name == name:
            return pod
    raise UnknownPod(f"{name!r} is not a pod of the sample chain; pods are: {', '.join(POD_NAMES)}")


def netns_available() -> bool:
    """Network namespaces need root and iproute2."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


CLUSTER = "cluster"


def mode(cfg: Config) -> str:
    """``netns``, ``loopback`` or ``cluster`` (a Kubernetes pod): the configured mode, ``auto``
    resolved for this machine."""
    if cfg.sdc_mode == "auto":
        return "netns" if netns_available() else "loopback"
    return cfg.sdc_mode


def subnet(cfg: Config) -> ipaddress.IPv4Network:
    if cfg.sdc_subnet:
        return ipaddress.IPv4Network(cfg.sdc_subnet)
    return ipaddress.IPv4Network(NETNS_SUBNET if mode(cfg) == "netns" else LOOPBACK_SUBNET)


def pod_ip(cfg: Config, name: str) -> str:
    """The pod's address; in a cluster this process's own pod's (its host name's, as the kubelet
    writes /etc/hosts), which only the pod itself asks for."""
    if mode(cfg) == CLUSTER:
        return socket.gethostbyname(socket.gethostname())
    return str(subnet(cfg).network_address + spec(name).host)


def gateway_ip(cfg: Config) -> str:
    """The host's address on every pod veth (netns mode)."""
    return str(subnet(cfg).network_address + GATEWAY_HOST)


def client_ips(cfg: Config) -> list[str]:
    base = subnet(cfg).network_address
    return [str(base + h) for h in CLIENT_HOSTS]


def stats_port(cfg: Config, name: str) -> int:
    """Locally one port per pod on the host's loopback; in a cluster every pod has its own."""
    return cfg.sdc_stats_port if mode(cfg) == CLUSTER else cfg.sdc_stats_port + spec(name).index


def stats_host(cfg: Config) -> str:
    """Where the stats endpoint listens: the host's loopback, or in a cluster every address of
    the pod (the kubelet's readiness probe and Prometheus come from outside it)."""
    return "0.0.0.0" if mode(cfg) == CLUSTER else "127.0.0.1"


def dataplane(cfg: Config, name: str) -> str:
    """What answers a pod's HTTP: ``nginx`` (the servers, the load balancers and the proxy, outside
    a cluster, unless CLOVER_SDC_DATAPLANE=python; the proxy only with the WAF check off) or
    ``python`` (the pod's own server or relay)."""
    kind = spec(name).kind
    if kind not in (SERVER, LB, PROXY) or cfg.sdc_dataplane == "python" or (kind == PROXY and cfg.waf_check):
        return "python"
    if cfg.sdc_dataplane == "auto" and mode(cfg) == CLUSTER:
        return "python"
    return "nginx"


def netns_name(cfg: Config, name: str) -> str:
    return f"{cfg.sdc_tag}-{name}"


def host_veth(cfg: Config, name: str) -> str:
    """Host side of a pod's veth pair (at most 15 characters: the kernel's limit)."""
    return f"{cfg.sdc_tag}-{spec(name).abbrev}"


def ids_http_port() -> int:
    return IDS_HTTP_PORT if os.geteuid() == 0 else IDS_HTTP_PORT_UNPRIVILEGED


def waf_http_port() -> int:
    """Apache's port in the modsecurity-crs pod (80, as the original's Service; 8080 without root)."""
    return WAF_HTTP_PORT if os.geteuid() == 0 else WAF_HTTP_PORT_UNPRIVILEGED


def ports(name: str) -> dict[str, int]:
    """The pod's service ports (on its own address)."""
    if spec(name).kind == IDS:
        return {"http": ids_http_port(), "grpc": IDS_GRPC_PORT}
    if spec(name).kind == WAF:
        return {"http": waf_http_port()}
    return {"http": HTTP_PORT, "grpc": GRPC_PORT}


def pod_dir(cfg: Config, name: str) -> Path:
    """The pod's state directory (the launcher's part directory)."""
    return cfg.state_dir / name


def rootfs(cfg: Config, name: str) -> Path:
    """The pod's own file system: absolute paths in its configuration live under here."""
    return pod_dir(cfg, name) / "rootfs"


def node_id(cfg: Config, name: str) -> str:
    """Envoy's node id form, as the original's spans carry it (contains the pod name)."""
    return f"sidecar~{pod_ip(cfg, name)}~{name}.{NAMESPACE}~{NAMESPACE}.{CLUSTER_DOMAIN}"
