"""Kubernetes discovery: watch pods (of this node) and services, derive what to trace.

The original listed pods once at start; here two watches keep a cache current, so pods started
later are traced and removed ones are detached. Label filters apply to pods (as the docs say),
and service port names (Istio convention) give each port's protocol. The service account
needs only get/list/watch on pods and services.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from clovisor import netns
from clovisor.settings import Settings
from clovisor.targets import PodTarget, port_protocol

log = logging.getLogger(__name__)


def _selector_matches(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in (selector or {}).items())


def pod_ports(pod: Any, services: Iterable[Any], plugin_protocols: frozenset[str]) -> tuple[dict[int, str], str]:
    """(container port -> protocol, service name) of one pod from the services selecting it."""
    labels = pod.metadata.labels or {}
    named: dict[str, int] = {}
    numbers: set[int] = set()
    for container in pod.spec.containers or []:
        for cp in container.ports or []:
            numbers.add(int(cp.container_port))
            if cp.name:
                named[cp.name] = int(cp.container_port)
    ports: dict[int, str] = {}
    service_name = ""
    for svc in services:
        if svc.metadata.namespace != pod.metadata.namespace:
            continue
        if svc.metadata.namespace == "default" and svc.metadata.name == "kubernetes":
            continue
        if not _selector_matches(svc.spec.selector, labels):
            continue
        for sp in svc.spec.ports or []:
            proto = port_protocol(sp.name or "")
            if proto is None or (sp.protocol or "TCP") != "TCP":
                continue
            target = sp.target_port if sp.target_port is not None else sp.port
            number = named.get(target) if isinstance(target, str) and not target.isdigit() else int(target)
            if number is None or (numbers and number not in numbers):
                continue
            ports[number] = proto
            service_name = service_name or svc.metadata.name
    from clovisor.targets import TCP_PROTOCOLS

    traced = {
        p: proto for p, proto in ports.items() if proto == "http" or proto in plugin_protocols or proto in TCP_PROTOCOLS
    }
    return traced, service_name


def targets_from(
    pods: Iterable[Any],
    services: Iterable[Any],
    settings: Settings,
    node: str,
    plugin_protocols: frozenset[str],
    resolve_veth: Callable[[str], str | None],
) -> list[PodTarget]:
    """What to trace on ``node`` given the cached objects and the Redis settings."""
    services = list(services)
    out = []
    for pod in pods:
        if pod.spec.node_name != node or pod.metadata.deletion_timestamp is not None:
            continue
        if (pod.status.phase or "") != "Running" or not pod.status.pod_ip or pod.spec.host_network:
            continue
        labels = dict(pod.metadata.labels or {})
        if not settings.selects(pod.metadata.namespace, labels):
            continue
        ports, service = pod_ports(pod, services, plugin_protocols)
        if not ports:
            continue
        veth = resolve_veth(pod.status.pod_ip)
        if veth is None:
            log.warning(
                "no host veth found for pod %s/%s (%s)", pod.metadata.namespace, pod.metadata.name, pod.status.pod_ip
            )
            continue
        out.append(
            PodTarget(
                pod.metadata.name,
                pod.metadata.namespace,
                service or pod.metadata.name,
                pod.status.pod_ip,
                veth,
                ports,
                labels,
            )
        )
    return out


class KubeSource:
    """Watches this node's pods and all services; ``changed()`` says when to reconcile."""

    name = "kubernetes"

    def __init__(self, node: str, api: Any = None) -> None:
        if api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api = client.CoreV1Api()
        self.api = api
        self.node = node
        self._pods: dict[str, Any] = {}
        self._services: dict[str, Any] = {}
        self._veths: dict[str, str] = {}
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, args=("pods",), name="clovisor-watch-pods", daemon=True),
            threading.Thread(target=self._watch, args=("services",), name="clovisor-watch-services", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _list(self, kind: str) -> Any:
        if kind == "pods":
            return self.api.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.node}")
        return self.api.list_service_for_all_namespaces()

    def _watch(self, kind: str) -> None:
        from kubernetes import watch

        cache = self._pods if kind == "pods" else self._services
        backoff = 1.0
        while not self._stop.is_set():
            try:
                listing = self._list(kind)
                with self._lock:
                    cache.clear()
                    for obj in listing.items:
                        cache[f"{obj.metadata.namespace}/{obj.metadata.name}"] = obj
                self._dirty.set()
                version = listing.metadata.resource_version
                w = watch.Watch()  # type: ignore[no-untyped-call]  # kubernetes: no annotations
                kwargs: dict[str, Any] = {"resource_version": version, "timeout_seconds": 300}
                func = (
                    self.api.list_pod_for_all_namespaces if kind == "pods" else self.api.list_service_for_all_namespaces
                )
                if kind == "pods":
                    kwargs["field_selector"] = f"spec.nodeName={self.node}"
                for event in w.stream(func, **kwargs):  # type: ignore[no-untyped-call]  # kubernetes: no annotations
                    if self._stop.is_set():
                        w.stop()  # type: ignore[no-untyped-call]  # kubernetes: no annotations
                        break
                    obj = event["object"]
                    key = f"{obj.metadata.namespace}/{obj.metadata.name}"
                    with self._lock:
                        if event["type"] == "DELETED":
                            cache.pop(key, None)
                        else:
                            cache[key] = obj
                    self._dirty.set()
                backoff = 1.0
            except Exception as exc:  # API server away, expired resource version: list again
                log.warning("watching %s failed (%s); relisting in %.0fs", kind, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30)

    def changed(self) -> bool:
        if self._dirty.is_set():
            self._dirty.clear()
            return True
        return False

    def _resolve(self, ip: str) -> str | None:
        veth = self._veths.get(ip)
        if veth is None:
            veth = netns.veth_for_ip(ip)
            if veth:
                self._veths[ip] = veth
        return veth

    def targets(self, settings: Settings, plugin_protocols: frozenset[str]) -> list[PodTarget]:
        with self._lock:
            pods, services = list(self._pods.values()), list(self._services.values())
        live_ips = {p.status.pod_ip for p in pods if p.status and p.status.pod_ip}
        for ip in list(self._veths):
            if ip not in live_ips:
                del self._veths[ip]
        return targets_from(pods, services, settings, self.node, plugin_protocols, self._resolve)

    def close(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + 2
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
