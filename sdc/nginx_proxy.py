"""proxy-access-control with Debian's nginx as its data plane (CLOVER_SDC_DATAPLANE=nginx).

The pod's Python process stays the control plane (``sdc/nginx_plane.py``); what the Python proxy
does (``sdc/proxy.py``) is rendered into nginx's configuration:

* forwarding: ``location_path`` goes to an ``upstream`` of ``proxy_path``'s addresses (the
  ``http-lb`` service: both load balancers, round-robin), with the chain's forwarding headers;
  other paths get 404;
* the block list: a ``geo`` of the blocked client IPs; a blocked client's request is answered 403
  by an internal server of the same nginx (on a unix socket), so that, like every other request,
  it is still copied to the IDS. ProcessAlerts re-renders and reloads before it answers, and the
  pod re-renders when a block expires;
* the IDS copy: nginx's ``mirror`` sends every request (body included) to ``mirror_path``, with
  the client's headers plus ``X-Real-IP``/``X-Forwarded-For``, an RFC 7239 ``Forwarded`` header
  (client's and proxy's address and port) and ``X-Clover-Mirror``, as the Python proxy's copy.
  The copy is sent beside the request rather than after the answer, and nginx keeps the client's
  keep-alive connection until the IDS answered it (the IDS answers each copy at once). When the
  IDS cannot be reached, the copy fails at once for the next second (``max_fails=1
  fail_timeout=1s`` and a ``backup`` address in the pod that refuses connections) and is counted
  in ``clover_sdc_proxy_mirror_errors_total``. nginx logs each copy (``log_subrequest``): its line
  gives the copy's CLIENT span (span id: the middle 64 bits of ``$request_id``) and the
  ``outbound|80||snort-ids`` statistics.
* ModifyProxy (upstream, mirror on/off or elsewhere, ``block_seconds``, port, location) is checked
  as for the Python proxy, then rendered and applied by a reload: requests in flight finish.

The WAF check needs the request's body and the WAF's verdict before forwarding; with
``CLOVER_WAF=on`` the proxy keeps its Python data plane (``sdc.topology.dataplane``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from pathlib import Path

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from protos import nginx_pb2
from sdc import topology
from sdc.forward import SENDER_POD, SENDER_SERVICE, error_page
from sdc.mirror import ERRORS
from sdc.nginx_control import MODIFIED, PROCESSED
from sdc.nginx_plane import (
    NginxService,
    Upstream,
    as_int,
    as_seconds,
    forwarding,
    log_format,
    preamble,
    socket_dir,
    status_server,
    trace_headers,
    upstream_block,
)
from sdc.proxy import BLOCKED_TEXT, MIRROR_OFF, Block, Blocklist, ProxyConfig, ProxyControl
from sdc.runtime import ConfigRefused, Runtime
from sdc.tracing import finish

log = logging.getLogger(__name__)

COPY_LOCATION = "/__clover_ids_copy"
REFUSING_PORT = 1  # nothing listens there in the pod: the mirror's backup address, refusing at once
MAX_XFF_COUNTED = 16
EXPIRY_CHECK_SECONDS = 0.25


def _host(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


def _xff_count() -> str:
    """A ``map`` counting the entries of the client's X-Forwarded-For (up to MAX_XFF_COUNTED):
    the IDS keeps that many and drops the client address the copy appends."""
    rules = "".join(f'        "~^[^,]*(,[^,]*){{{n - 1}}}$" {n};\n' for n in range(1, MAX_XFF_COUNTED + 1))
    last = f"        default {MAX_XFF_COUNTED};\n"
    return f'    map $http_x_forwarded_for $clover_xff_count {{\n        "" 0;\n{rules}{last}    }}\n'


def render(pod: str, service: str, where: Path, ip: str, config: ProxyConfig, lbs: list[Upstream],
           ids: list[Upstream], blocked: list[str], ratio: float) -> str:  # fmt: skip
    """The nginx configuration of the proxy pod ``pod`` of ``service``."""
    fifo = where / "access.fifo"
    sockets = socket_dir(where)
    geo = "".join(f"        {b} 1;\n" for b in blocked)
    mirror = "" if config.mirror_path == MIRROR_OFF else f"            mirror {COPY_LOCATION};\n"
    other = ""
    if config.location_path != "/":
        other = f"""        location / {{
{mirror}            proxy_pass http://$clover_elsewhere;
        }}
"""
    copy_location = ""
    ids_block = ""
    if config.mirror_path != MIRROR_OFF:
        refusing = f"        server {ip}:{REFUSING_PORT} backup max_fails=0;\n"
        # Idle connections to the IDS close after 1 s and a copy unanswered for 2 s fails: a
        # connection to an IDS that went away with its namespace (no FIN) is not kept or waited on.
        ids_block = upstream_block("clover_ids", ids, "1s", refusing, "1s")
        copy_location = f"""        location = {COPY_LOCATION} {{
            internal;
            log_subrequest on;
            access_log {fifo} clover_copy;
            proxy_pass http://clover_ids$request_uri;
            proxy_bind {ip};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto http;
            proxy_set_header X-Request-Id $clover_request_id;
            proxy_set_header Forwarded 'for="$remote_addr:$remote_port";by="{ip}:{config.server_port}";proto=http';
            proxy_set_header X-Clover-Mirror "length=$clover_length; truncated=0; xff=$clover_xff_count; rid=$clover_rid_made";
            proxy_set_header {SENDER_SERVICE} "{service}";
            proxy_set_header {SENDER_POD} "{pod}";
{trace_headers("$clover_copy_span")}            proxy_connect_timeout 1s;
            proxy_send_timeout 2s;
            proxy_read_timeout 2s;
        }}
"""  # noqa: E501
    forward = forwarding(service, pod, "$clover_bind", "$remote_addr", _host(config.proxy_path))
    formats = log_format("clover", blocked="$clover_blocked") + log_format(
        "clover_copy", copy="1", copy_span="$clover_copy_span", up_len="$upstream_response_length"
    )
    return f"""{preamble(pod, where, ratio, formats)}\
    geo $remote_addr $clover_blocked {{
        default 0;
{geo}    }}
    map $clover_blocked $clover_pass {{ "1" clover_blocked; default clover_upstream; }}
    map $clover_blocked $clover_elsewhere {{ "1" clover_blocked; default clover_unmatched; }}
    map $clover_blocked $clover_bind {{ "1" ""; default "{ip}"; }}
    map $content_length $clover_length {{ "" 0; default $content_length; }}
    map $http_x_request_id $clover_rid_made {{ "" 1; default 0; }}
{_xff_count()}{upstream_block("clover_upstream", lbs)}{ids_block}\
    upstream clover_blocked {{ server unix:{sockets}/blocked.sock; }}
    upstream clover_unmatched {{ server unix:{sockets}/unmatched.sock; }}
    server {{
        listen {ip}:{config.server_port} backlog=1024;
        server_name {config.server_name};
        access_log {fifo} clover;
        add_header traceresponse "00-$clover_trace_id-$clover_server_span-$clover_sampled" always;
        add_header Via $clover_via always;
        location {config.location_path} {{
{mirror}            proxy_pass http://$clover_pass;
{forward}        }}
{other}{copy_location}    }}
    server {{
        listen unix:{sockets}/blocked.sock;
        access_log off;
        default_type text/html;
        location / {{ return 403 '{error_page(403, BLOCKED_TEXT, pod)}'; }}
    }}
    server {{
        listen unix:{sockets}/unmatched.sock;
        access_log off;
        default_type text/html;
        location / {{ return 404 '{error_page(404, "no location matches $uri", pod)}'; }}
    }}
{status_server(where)}}}
"""


class NginxProxy(NginxService[ProxyConfig]):
    kind = "proxy"

    def __init__(self, runtime: Runtime):
        super().__init__(runtime)
        self.control: ProxyControl = ProxyControl(runtime)
        self.blocklist = self.control.blocklist
        self._candidate: Blocklist | None = None
        self._rendering: dict[str, Block] = {}
        self._rendered: dict[str, Block] = {}  # the blocks nginx has: what GetConfig shows
        self._expiry: asyncio.Task[None] | None = None
        # Istio's ingress gateway would count these for its calls to the proxy (see sdc/metrics.py).
        self.gateway_stats = runtime.outbound(topology.HTTP_PORT, runtime.spec.service)
        runtime.outbound(topology.HTTP_PORT, "http-lb")
        runtime.outbound(topology.ids_http_port(), "snort-ids")
        runtime.registry.inc(ERRORS, 0, help="Mirror copies that failed")

    @property
    def config(self) -> ProxyConfig:
        return self.control.config

    @config.setter
    def config(self, config: ProxyConfig) -> None:
        self.control.config = config

    # -- rendering -----------------------------------------------------------------------------

    def groups(self, config: ProxyConfig) -> list[tuple[list[str], bool]]:
        found = [([_host(config.proxy_path)], False)]
        if config.mirror_path != MIRROR_OFF:  # an IDS that stopped keeps its address: its copies fail, counted
            found.append(([_host(config.mirror_path)], True))
        return found

    def with_port(self, config: ProxyConfig, port: int) -> ProxyConfig:
        return dataclasses.replace(config, server_port=port)

    def render(self, config: ProxyConfig, resolved: list[list[Upstream]]) -> str:
        rt = self.runtime
        self._rendering = {b.ip: b for b in (self._candidate or self.blocklist).active()}
        blocked = sorted(self._rendering)
        return render(rt.name, rt.spec.service, self.listener.home, rt.ip, config, resolved[0],
                      resolved[1] if len(resolved) > 1 else [], blocked, rt.cfg.sdc_trace_ratio)  # fmt: skip

    async def switch(self, config: ProxyConfig, resolved: list[list[Upstream]] | None = None) -> None:
        await super().switch(config, resolved)
        self._rendered = self._rendering

    # -- control -------------------------------------------------------------------------------

    async def modify_proxy(self, request: nginx_pb2.ConfigProxy) -> str:
        config, _, _ = await self.control.checked(request)
        self.rebind_check(config.server_port)
        await self.switch(config)
        self.port_applied(config.server_port)
        return MODIFIED

    async def process_alert(self, request: nginx_pb2.AlertMessage) -> str:
        entry = await self.control.block(request)
        self._candidate = Blocklist(dict(self.blocklist.entries))
        self._candidate.block(entry)
        try:
            await self.switch(self.config)
        finally:
            self._candidate = None
        self.control.record(entry)
        return PROCESSED

    def dump(self) -> nginx_pb2.ConfigDump:
        dump: nginx_pb2.ConfigDump = self.control.dump(self.kind, sorted(self._rendered.values(), key=lambda b: b.ip))
        return dump

    async def follow_blocks(self) -> None:
        """Re-render once a block expired (the list nginx has and the list in force differ)."""
        while True:
            await asyncio.sleep(EXPIRY_CHECK_SECONDS)
            if {b.ip for b in self.blocklist.active()} == set(self._rendered):
                continue
            async with self.lock:
                if {b.ip for b in self.blocklist.active()} == set(self._rendered):
                    continue
                try:
                    await self.switch(self.config)
                except ConfigRefused as exc:
                    log.warning("cannot lift an expired block: %s", exc)
                    continue
                log.info("blocked clients now: %s", ", ".join(sorted(self._rendered)) or "none")

    async def start(self) -> None:
        await super().start()
        self._rendered = self._rendering
        self._expiry = asyncio.create_task(self.follow_blocks())

    async def stop(self) -> None:
        await super().stop()
        if self._expiry is not None:
            self._expiry.cancel()
        if self.control.redis is not None:
            with contextlib.suppress(Exception):
                await self.control.redis.aclose()

    # -- what nginx logged -------------------------------------------------------------------

    def account(self, entry: dict[str, str], read_at: float) -> None:
        if entry.get("copy"):
            self._copy(entry, read_at)
            return
        end, took, status, size = self.request_done(entry, read_at)
        self.gateway_stats.request_started()
        self.gateway_stats.request_finished(status, took * 1000, as_int(entry["clen"]), size)
        blocked = entry.get("blocked") == "1"
        if blocked:
            self.runtime.registry.inc("clover_sdc_proxy_blocked_requests_total", help="Requests refused with 403")
        attempts = self.attempts(entry)
        if entry["sampled"] == "01":
            start_ns, end_ns = int((end - took) * 1e9), int(end * 1e9)
            server = self.server_span(entry, start_ns)
            self.client_spans(entry, server, attempts, start_ns, end_ns, size, int(entry["client"], 16))
            finish(server, status, size, "client blocked" if blocked else None, end_time=end_ns)

    def _copy(self, entry: dict[str, str], read_at: float) -> None:
        """One copy nginx sent to the IDS (its subrequest's line)."""
        attempts = [a for a in self.attempts(entry) if a[0] is not None]
        status = as_int(entry["status"])
        if status >= 500 or not attempts or not attempts[-1][1]:
            self.runtime.registry.inc(ERRORS, help="Mirror copies that failed")
        if entry["sampled"] != "01" or not attempts:
            return
        end = max(float(entry["msec"]), min(read_at, float(entry["msec"]) + 0.001))
        took = as_seconds(entry["rt"])
        trace_id = int(entry["trace"], 16)
        server = SpanContext(trace_id, int(entry["server"], 16), False, TraceFlags(TraceFlags.SAMPLED))
        parent = trace.set_span_in_context(NonRecordingSpan(server))
        size = as_int(entry["up_len"].split(", ")[-1])
        start_ns, end_ns = int((end - took) * 1e9), int(end * 1e9)
        self.client_spans(entry, parent, attempts[-1:], start_ns, end_ns, size, int(entry["copy_span"], 16))

    def _refresh(self) -> None:
        super()._refresh()
        self.gateway_stats.gauges["upstream_cx_active"] = self.inbound_stats.gauges["upstream_cx_active"]
        self.runtime.registry.set("clover_sdc_proxy_blocked_clients", len(self.blocklist.active()),
                                  "Client IPs currently blocked")  # fmt: skip
        # nginx logs a request once its copy is answered: no copy is in flight for the pod.
        in_flight = "Mirrored copies not yet answered by the IDS"
        self.runtime.registry.set("clover_sdc_proxy_mirrors_in_flight", 0, in_flight)
        self.runtime.registry.inc("clover_sdc_proxy_mirror_dropped_total", 0, help="Mirror copies dropped (backlog)")
