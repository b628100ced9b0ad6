"""What every pod process has: its address, listeners, gRPC server, stats endpoint and tracer.

A pod's service (proxy, lb, server, ids) builds on a ``Runtime``. Listeners are made by the
pod's ``Placement`` (its namespace or loopback address); the stats endpoint listens on the
host's loopback (``127.0.0.1:<stats port>``; in a cluster on the pod's addresses): ``/metrics``
for Prometheus, ``/ready`` for the launcher or the kubelet, ``/stats`` as JSON.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import grpc
from aiohttp import web
from opentelemetry.trace import SpanKind

from clover import pods
from clover.config import Config
from sdc import topology
from sdc.accesslog import open_access_log, sources
from sdc.metrics import ClusterStats, Registry, envoy_metric
from sdc.names import Resolver
from sdc.netns import LISTEN_BACKLOG, Placement
from sdc.tracing import Telemetry

log = logging.getLogger(__name__)
_R = TypeVar("_R")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class CountingServer(web.Server):
    """aiohttp's low-level server, counting accepted connections for a cluster's cx stats."""

    def __init__(self, handler: Handler, stats: ClusterStats, **kwargs: Any):
        super().__init__(handler, access_log=None, **kwargs)
        self.stats = stats

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.stats.counters["upstream_cx_total"] += 1

    def refresh(self) -> None:
        self.stats.gauges["upstream_cx_active"] = len(self.connections)


class HttpListener:
    """An HTTP server on the pod's address that can move to another port without dropping
    the requests in flight (the old socket stops accepting; its connections finish)."""

    def __init__(self, runtime: Runtime, handler: Handler, stats: ClusterStats):
        self.runtime = runtime
        self.server = CountingServer(handler, stats, keepalive_timeout=75)
        self.port = 0
        self._servers: list[asyncio.Server] = []

    async def bind(self, port: int) -> None:
        sock = self.runtime.placement.listener(port)
        loop = asyncio.get_running_loop()
        self._servers.append(await loop.create_server(self.server, sock=sock, backlog=LISTEN_BACKLOG))
        self.port = port

    async def rebind(self, port: int) -> None:
        """Listen on ``port`` (raises OSError, leaving the old listener, when it is taken)."""
        if port == self.port:
            return
        old = self._servers[:]
        await self.bind(port)
        for server in old:
            server.close()
            self._servers.remove(server)
        self.runtime.port_changed("http", port)

    async def close(self, grace: float) -> None:
        for server in self._servers:
            server.close()
        self.server.pre_shutdown()  # idle keep-alive connections close now, busy ones after their answer
        await self.server.shutdown(grace)


class ConfigRefused(ValueError):
    """A Modify*/AddRules request that cannot be applied; the message names the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class WrongPod(ConfigRefused):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Runtime:
    """The shared parts of one pod process."""

    def __init__(self, cfg: Config, pod: str):
        self.cfg = cfg
        self.spec = topology.spec(pod)
        self.name = pod
        self.mode = topology.mode(cfg)
        self.ip = topology.pod_ip(cfg, pod)
        self.ports = dict(topology.ports(pod))
        self.netns = topology.netns_name(cfg, pod) if self.mode == "netns" else None
        self.host_veth = topology.host_veth(cfg, pod) if self.mode == "netns" else None
        self.placement = Placement(self.ip, self.netns)
        self.registry = Registry()
        self.resolver = Resolver(cfg)
        self.dataplane = topology.dataplane(cfg, pod)
        self.telemetry = Telemetry(cfg, pod, records_all=self.dataplane == "nginx")
        self.access_log, self.log_stream = open_access_log(pod)
        self.sources = sources(cfg)
        self.stats_port = topology.stats_port(cfg, pod)
        self.rootfs = topology.rootfs(cfg, pod)
        self.ready = False
        self.refreshers: list[Callable[[], None]] = [self._refresh_tracing]
        self.stats_extra: Callable[[], dict[str, Any]] = dict
        self._stats_site: asyncio.Server | None = None
        self._stats_server: web.Server | None = None
        self.grpc_server: grpc.aio.Server | None = None

    # -- clusters --------------------------------------------------------------------------

    def inbound(self, port: int) -> ClusterStats:
        return self.registry.cluster("inbound", port, self.spec.fqdn)

    def outbound(self, port: int, service: str) -> ClusterStats:
        fqdn = service if _is_ip(service) else f"{service}.{topology.NAMESPACE}.{topology.CLUSTER_DOMAIN}"
        return self.registry.cluster("outbound", port, fqdn)

    # -- gRPC --------------------------------------------------------------------------------

    async def start_grpc(self, add_servicers: Callable[[grpc.aio.Server], None], port: int) -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        add_servicers(server)
        with self.placement.inside():
            bound = server.add_insecure_port(f"{self.ip}:{port}")
        if bound != port:
            raise OSError(f"cannot listen for gRPC on {self.ip}:{port}")
        await server.start()
        self.grpc_server = server

    def rpc_span(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> Any:
        """A SERVER span for an incoming call, continuing the caller's trace."""
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        port = self.ports["grpc"]
        tags: dict[str, str | int | bool] = {"http.url": f"http://{self.name}:{port}/{method}", "rpc.system": "grpc",
                                             "upstream_cluster": f"inbound|{port}||{self.spec.fqdn}"}  # fmt: skip
        return self.telemetry.start(method, SpanKind.SERVER, self.telemetry.extract(metadata), tags)

    # -- stats endpoint ----------------------------------------------------------------------

    async def start_stats(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((topology.stats_host(self.cfg), self.stats_port))
        sock.listen(64)
        sock.setblocking(False)
        self._stats_server = web.Server(self._stats_handler, access_log=None)
        self._stats_site = await asyncio.get_running_loop().create_server(self._stats_server, sock=sock)

    def _refresh_tracing(self) -> None:
        self.registry.metric(
            "envoy_tracing_zipkin_spans_sent", "counter", "Spans sent to the trace backend"
        ).value = self.telemetry.sender.ended

    def snapshot(self) -> dict[str, float]:
        """Every metric's current value, by exposed name."""
        for refresh in self.refreshers:
            refresh()
        values: dict[str, float] = {}
        for stats in self.registry.clusters.values():
            for stat, value in (*stats.counters.items(), *stats.gauges.items()):
                values[envoy_metric(stats.cluster, stat)] = value
        for metric in self.registry.metrics.values():
            values[metric.name] = metric.value
        return values

    async def _stats_handler(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/metrics":
            for refresh in self.refreshers:
                refresh()
            return web.Response(text=self.registry.render(), content_type="text/plain", charset="utf-8")
        if request.path == "/ready":
            if self.ready:
                return web.Response(text="ready\n")
            return web.Response(status=503, text="starting\n")
        if request.path == "/stats":
            body = {
                "pod": self.name,
                "ip": self.ip,
                "ready": self.ready,
                "dataplane": self.dataplane,
                "metrics": self.snapshot(),
                **self.stats_extra(),
            }
            return web.Response(text=json.dumps(body, sort_keys=True), content_type="application/json")
        return web.Response(status=404, text="paths: /metrics /ready /stats\n")

    # -- registration ------------------------------------------------------------------------

    def local_pod(self) -> pods.LocalPod:
        return pods.LocalPod(
            name=self.name,
            service=self.spec.service,
            ip=self.ip,
            ports={**self.ports, "stats": self.stats_port},
            namespace=topology.NAMESPACE,
            labels=dict(self.spec.labels),
            netns=self.netns,
            host_veth=self.host_veth,
            pid=os.getpid(),
        )

    def port_changed(self, name: str, port: int) -> None:
        """A listener moved: the registry says where the pod now answers."""
        self.ports[name] = port
        if self.ready:
            pods.register(self.cfg, self.local_pod())

    def prometheus_target(self) -> dict[str, Any]:
        labels = {"pod": self.name, "namespace": topology.NAMESPACE, "app": self.spec.service, "sdc": "true"}
        if self.spec.version:
            labels["version"] = self.spec.version
        return {"targets": [f"127.0.0.1:{self.stats_port}"], "labels": labels}

    async def close_stats(self) -> None:
        if self._stats_site is not None:
            self._stats_site.close()
        if self._stats_server is not None:
            self._stats_server.pre_shutdown()
            await self._stats_server.shutdown(1.0)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def run_loop(main: Coroutine[Any, Any, _R]) -> _R:
    """Run on uvloop (libuv) when it is installed: a pod spends most of its time in the loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
