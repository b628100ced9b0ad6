"""http-lb with Debian's nginx as its data plane (CLOVER_SDC_DATAPLANE=nginx), as the original ran it.

The pod's Python process stays the control plane (``sdc/nginx_plane.py``): ModifyLB is checked
as for the Python load balancer, then rendered into an nginx configuration (``upstream`` of the
servers' addresses, round-robin, ``max_fails=1 fail_timeout=10s``, keep-alive), tested with
``nginx -t`` and applied with a reload, so no request in flight is dropped. Each request's log
line gives the pod's access-log entry, its inbound and outbound (one per server) statistics and,
when sampled, its SERVER and CLIENT spans. Gauges come from nginx's ``stub_status`` and the
worker's TCP table.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from protos import nginx_pb2
from sdc.lb import LbConfig, checked_config, config_dump
from sdc.nginx_control import MODIFIED
from sdc.nginx_plane import NginxService, Upstream, forwarding, log_format, preamble, status_server, upstream_block
from sdc.runtime import Runtime
from sdc.tracing import finish


def render(
    pod: str, service: str, home: Path, ip: str, config: LbConfig, upstreams: list[Upstream], ratio: float
) -> str:
    """The nginx configuration of a load balancer pod ``pod`` of ``service``."""
    other = "" if config.lb_path == "/" else '        location / { return 404 "no location matches $uri\\n"; }\n'
    head = preamble(pod, home, ratio, log_format("clover")) + upstream_block(config.slb_group, upstreams)
    return f"""{head}    server {{
        listen {ip}:{config.server_port} backlog=1024;
        server_name {config.server_name};
        access_log {home}/access.fifo clover;
        add_header traceresponse "00-$clover_trace_id-$clover_server_span-$clover_sampled" always;
        add_header Via $clover_via always;
        location {config.lb_path} {{
            proxy_pass http://{config.slb_group};
{forwarding(service, pod, ip, "$clover_real_ip")}        }}
{other}    }}
{status_server(home)}}}
"""


class NginxLoadBalancer(NginxService[LbConfig]):
    kind = "lb"

    def __init__(self, runtime: Runtime):
        super().__init__(runtime)
        self.config = LbConfig()

    def groups(self, config: LbConfig) -> list[tuple[list[str], bool]]:
        return [(config.slb_list, False)]

    def with_port(self, config: LbConfig, port: int) -> LbConfig:
        return dataclasses.replace(config, server_port=port)

    def render(self, config: LbConfig, resolved: list[list[Upstream]]) -> str:
        rt = self.runtime
        return render(rt.name, rt.spec.service, self.listener.home, rt.ip, config, resolved[0], rt.cfg.sdc_trace_ratio)

    async def modify_lb(self, request: nginx_pb2.ConfigLB) -> str:
        config, _ = await checked_config(self.runtime, self.config, request)
        self.rebind_check(config.server_port)
        await self.switch(config)
        self.port_applied(config.server_port)
        return MODIFIED

    def dump(self) -> nginx_pb2.ConfigDump:
        return config_dump(self.kind, self.runtime.name, self.config)

    def account(self, entry: dict[str, str], read_at: float) -> None:
        """One request nginx answered (its line read at ``read_at``): stats, spans, the access-log entry."""
        end, took, status, size = self.request_done(entry, read_at)
        attempts = self.attempts(entry)
        if entry["sampled"] == "01":
            start_ns, end_ns = int((end - took) * 1e9), int(end * 1e9)
            tags = self.tags(entry, self.inbound_stats.cluster)
            server = self.server_span(entry, tags, start_ns)
            self.client_spans(entry, server, tags, attempts, start_ns, end_ns, size, int(entry["client"], 16))
            finish(server, status, size, end_time=end_ns)

    def _refresh(self) -> None:
        super()._refresh()
        self.runtime.registry.set("clover_sdc_lb_servers", len(self.config.slb_list), "Servers in the list")
