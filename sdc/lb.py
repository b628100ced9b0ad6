"""http-lb (v1 and v2): round-robin over a server list that ModifyLB changes live.

Like the original's nginx upstream (default round-robin, max_fails=1, fail_timeout=10s), each
request goes to the next server; one that refuses connections is skipped for 10 s. A new
server list is checked first (every server must resolve and accept a connection), then swapped
in at once: requests in flight finish on the servers they were sent to, the rotation starts
again at the first server (as an nginx reload does), and connections to servers no longer
listed close when idle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from protos import nginx_pb2
from sdc import topology
from sdc.checks import host_port_field, path_field, port_field, resolve_reachable
from sdc.forward import (
    Inbound,
    Outgoing,
    UpstreamSet,
    client_response,
    error_response,
    forwarded_headers,
    new_request_id,
    relay,
    request_body,
)
from sdc.names import HostPort
from sdc.nginx_control import MODIFIED, HttpService
from sdc.runtime import ConfigRefused, HttpListener, Runtime

DEFAULT_SERVERS = ("clover-server1:9180", "clover-server2:9180", "clover-server3:9180")


@dataclass
class LbConfig:
    server_port: int = topology.HTTP_PORT
    server_name: str = "http-lb"
    slb_list: list[str] = field(default_factory=lambda: list(DEFAULT_SERVERS))
    slb_group: str = "cloverlb"
    lb_path: str = "/"


class LoadBalancer(HttpService):
    kind = "lb"
    listener: HttpListener

    def __init__(self, runtime: Runtime):
        super().__init__(runtime)
        self.config = LbConfig()
        self.upstreams = UpstreamSet(runtime, [HostPort(*_split(s)) for s in self.config.slb_list])
        self.inbound_stats = runtime.inbound(topology.HTTP_PORT)
        self.listener = HttpListener(runtime, self.handle, self.inbound_stats)
        for entry in self.upstreams.entries:
            self.upstreams.declare(entry.host, entry.port)
        runtime.refreshers.append(self._refresh)

    def _refresh(self) -> None:
        self.listener.server.refresh()
        self.runtime.registry.set("clover_sdc_lb_servers", len(self.config.slb_list), "Servers in the list")

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        config = self.config
        inbound = Inbound.of(self.runtime, request, self.inbound_stats, self.listener.port)
        if not request.path.startswith(config.lb_path):
            return inbound.done(error_response(404, f"no location matches {request.path}", self.runtime.name))
        request_id = inbound.request_id or new_request_id()
        candidates = await self.upstreams.ordered()
        if not candidates:
            return inbound.done(error_response(503, "no server of the list resolves", self.runtime.name), "no server")
        target = candidates[0]
        headers = forwarded_headers(request, inbound, target.label, False, request_id)
        body = await request_body(request)
        answer, _, error = await relay(self.runtime, Outgoing.of(request), candidates, headers, body, inbound.span)
        if answer is None:
            status = 504 if "did not answer" in error else 502
            return inbound.done(error_response(status, error, self.runtime.name), error)
        return inbound.done(client_response(answer, self.runtime.name))

    async def modify_lb(self, request: nginx_pb2.ConfigLB) -> str:
        config, entries = await checked_config(self.runtime, self.config, request)
        if config.server_port != self.listener.port:
            try:
                await self.listener.rebind(config.server_port)
            except OSError as exc:
                raise ConfigRefused(f"server_port {config.server_port}: cannot listen: {exc.strerror or exc}") from None
        self.config = config
        await self.upstreams.replace(entries)
        for entry in entries:
            self.upstreams.declare((await self.runtime.resolver.resolve_async(entry.host))[1], entry.port)
        return MODIFIED

    def dump(self) -> nginx_pb2.ConfigDump:
        return config_dump(self.kind, self.runtime.name, self.config)


async def checked_config(
    runtime: Runtime, current: LbConfig, request: nginx_pb2.ConfigLB
) -> tuple[LbConfig, list[HostPort]]:
    """The configuration a ModifyLB asks for, every field checked (each server must resolve and
    accept a connection), and its server list; raises ConfigRefused naming the field."""
    if not request.slb_list:
        raise ConfigRefused("slb_list is empty: a load balancer needs at least one server (host:port)")
    port = port_field(request.server_port, "server_port", current.server_port)
    lb_path = path_field(request.lb_path, "lb_path", current.lb_path)
    entries = []
    for i, item in enumerate(request.slb_list):
        field_name = f"slb_list[{i}]"
        address = host_port_field(item, field_name)
        await resolve_reachable(runtime.resolver, runtime.placement, address, field_name)
        entries.append(address)
    config = LbConfig(
        server_port=port,
        server_name=request.server_name or current.server_name,
        slb_list=[str(e) for e in entries],
        slb_group=request.slb_group or current.slb_group,
        lb_path=lb_path,
    )
    return config, entries


def config_dump(kind: str, pod: str, c: LbConfig) -> nginx_pb2.ConfigDump:
    lb = nginx_pb2.ConfigLB(
        server_port=str(c.server_port),
        server_name=c.server_name,
        slb_list=c.slb_list,
        slb_group=c.slb_group,
        lb_path=c.lb_path,
    )
    return nginx_pb2.ConfigDump(kind=kind, pod=pod, lb=lb)


def _split(item: str) -> tuple[str, int]:
    host, _, port = item.rpartition(":")
    return host, int(port)
