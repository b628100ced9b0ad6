"""Local discovery: the sample chain's pod registry, and (optionally) named network namespaces."""

from __future__ import annotations

import logging

from pyroute2.netlink.exceptions import NetlinkError

from clover.config import Config
from clover.pods import list_pods
from clovisor import netns
from clovisor.settings import DEFAULT_NAMESPACE, Settings
from clovisor.targets import PodTarget, traced_ports

log = logging.getLogger(__name__)


class LocalSource:
    """Pods registered in ``<state dir>/pods``; with ``netns_pattern``, also every named network
    namespace matching it that no registered pod claims (its listening TCP ports are traced as
    ``netns_protocol``, its name is pod and service name, namespace ``default``, no labels)."""

    name = "local"

    def __init__(self, cfg: Config, netns_pattern: str | None = None, netns_protocol: str = "http") -> None:
        self.cfg = cfg
        self.netns_pattern = netns_pattern
        self.netns_protocol = netns_protocol
        self._skipped: set[str] = set()

    def changed(self) -> bool:
        return False  # polled: targets() is cheap

    def targets(self, settings: Settings, plugin_protocols: frozenset[str]) -> list[PodTarget]:
        out = []
        claimed = set()
        for pod in list_pods(self.cfg):
            if pod.netns:
                claimed.add(pod.netns)
            if not settings.selects(pod.namespace, pod.labels):
                continue
            veth = pod.host_veth
            if not veth and pod.netns:
                try:
                    found = netns.veth_peer(pod.netns)
                except (OSError, NetlinkError):
                    found = None
                veth = found[0] if found else None
            if not veth:
                if pod.name not in self._skipped:
                    self._skipped.add(pod.name)
                    log.info("pod %s has no veth (it runs on loopback): not traced", pod.name)
                continue
            ports = traced_ports(pod.ports, plugin_protocols)
            out.append(PodTarget(pod.name, pod.namespace, pod.service, pod.ip, veth, ports, dict(pod.labels)))
        if self.netns_pattern:
            for name in netns.named_namespaces(self.netns_pattern):
                if name in claimed or not settings.selects(DEFAULT_NAMESPACE, {}):
                    continue
                try:
                    found = netns.veth_peer(name)
                    listening = netns.in_netns(name, netns.listening_tcp_ports)
                except (OSError, NetlinkError) as exc:
                    log.debug("namespace %s skipped: %s", name, exc)
                    continue
                if not found:
                    continue
                ports = {port: self.netns_protocol for port in sorted(listening)}
                out.append(PodTarget(name, DEFAULT_NAMESPACE, name, found[1], found[0], ports, {}))
        return out

    def close(self) -> None:
        pass
