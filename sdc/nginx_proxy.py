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
* the IDS copy: nginx's ``mirror`` sends every request (body included) to a relay in the same
  nginx (a server on a unix socket), with the client's headers plus ``X-Real-IP``/
  ``X-Forwarded-For``, an RFC 7239 ``Forwarded`` header (client's and proxy's address and port)
  and ``X-Clover-Mirror``, as the Python proxy's copy. The relay answers at once and sends the
  copy on to ``mirror_path`` by a mirror of its own: nginx keeps a connection until its mirrors
  are answered, and that way it is the relay's, not the client's, so an IDS that stalls holds
  its copies (at most ``MIRROR_BACKLOG``, each up to ``COPY_ANSWER_SECONDS``; one beyond the
  backlog is refused and counted in ``clover_sdc_proxy_mirror_dropped_total``) and no client.
  When the IDS cannot be reached, the copy fails at once for the next second (``max_fails=1
  fail_timeout=1s`` and a ``backup`` address in the pod that refuses connections) and is counted
  in ``clover_sdc_proxy_mirror_errors_total``. The relay logs each copy (``log_subrequest``): its
  line gives the copy's CLIENT span (span id: the middle 64 bits of the proxy's ``$request_id``)
  and the ``outbound|80||snort-ids`` statistics; ``clover_sdc_proxy_mirrors_in_flight`` is the
  number of the relay's connections (each copy holds one until the IDS answered it).
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

from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from protos import nginx_pb2
from sdc import topology
from sdc.forward import SENDER_POD, SENDER_SERVICE, error_page
from sdc.mirror import DROPPED, ERRORS
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
    unix_connections,
    upstream_block,
)
from sdc.proxy import BLOCKED_TEXT, MIRROR_BACKLOG, MIRROR_OFF, Block, Blocklist, ProxyConfig, ProxyControl
from sdc.runtime import ConfigRefused, Runtime
from sdc.tracing import finish

log = logging.getLogger(__name__)

COPY_LOCATION = "/__clover_ids_copy"
IDS_LOCATION = "/__clover_ids"
RELAY_SOCKET = "relay.sock"
COPY_TARGET = "X-Clover-Copy-Target"  # the client's request target, for the relay's copy
COPY_OF = "X-Clover-Copy-Of"  # the proxy's SERVER span: the parent of the copy's CLIENT span
COPY_ANSWER_SECONDS = 5  # a copy the IDS has not answered by then fails (it holds no client)
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


def _relay(fifo: Path, sockets: Path, ip: str) -> str:
    """The relay of the IDS copies: a server of the same nginx, on a unix socket, that answers the
    proxy's copy at once and sends it on to the IDS by a ``mirror`` of its own. nginx keeps a
    connection until its mirrors are answered: this way that is the relay's connection, closed
    once the IDS answered, not the client's. At most ``MIRROR_BACKLOG`` copies are in the relay
    at a time; one beyond that is refused (503) and counted as dropped."""
    copy_format = log_format(
        "clover_copy", copy="1", server=f"$http_{_var(COPY_OF)}", copy_span="$w3c_parent",
        uri=f"$http_{_var(COPY_TARGET)}", addr="$http_x_real_ip", port="$clover_copy_port",
        up_len="$upstream_response_length",
    )  # fmt: skip
    return f"""{copy_format}\
    map $http_forwarded $clover_copy_port {{ '~^for="[^"]*:([0-9]+)"' $1; default ""; }}
    map $status $clover_relay_failed {{ "~^2" 0; default 1; }}
    map "" $clover_relay_key {{ default relay; }}
    limit_conn_zone $clover_relay_key zone=clover_relay:1m;
    server {{
        listen unix:{sockets}/{RELAY_SOCKET} backlog=1024;
        access_log off;
        limit_conn clover_relay {MIRROR_BACKLOG};
        location = {COPY_LOCATION} {{
            mirror {IDS_LOCATION};
            empty_gif;
            error_page 405 = @relayed;
        }}
        location @relayed {{ return 204; }}
        location = {IDS_LOCATION} {{
            internal;
            log_subrequest on;
            access_log {fifo} clover_copy;
            proxy_pass http://clover_ids$http_{_var(COPY_TARGET)};
            proxy_bind {ip};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
            proxy_set_header {COPY_TARGET} "";
            proxy_set_header {COPY_OF} "";
            proxy_ignore_client_abort on;
            proxy_connect_timeout 1s;
            proxy_send_timeout {COPY_ANSWER_SECONDS}s;
            proxy_read_timeout {COPY_ANSWER_SECONDS}s;
        }}
    }}
"""


def _var(header: str) -> str:
    return header.lower().replace("-", "_")


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
    relay = ""
    if config.mirror_path != MIRROR_OFF:
        refusing = f"        server {ip}:{REFUSING_PORT} backup max_fails=0;\n"
        # Idle connections to the IDS close after 1 s: one to an IDS that went away with its
        # namespace (no FIN) is not kept. As many are kept as the relay holds copies: an IDS that
        # falls behind is not also made to accept a connection per copy.
        ids_upstream = upstream_block("clover_ids", ids, "1s", refusing, "1s", kept=MIRROR_BACKLOG)
        relay = ids_upstream + _relay(fifo, sockets, ip)
        copy_location = f"""        location = {COPY_LOCATION} {{
            internal;
            log_subrequest on;
            access_log {fifo} clover_relay_failed if=$clover_relay_failed;
            proxy_pass http://unix:{sockets}/{RELAY_SOCKET}:{COPY_LOCATION};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto http;
            proxy_set_header X-Request-Id $clover_request_id;
            proxy_set_header Forwarded 'for="$remote_addr:$remote_port";by="{ip}:{config.server_port}";proto=http';
            proxy_set_header X-Clover-Mirror "length=$clover_length; truncated=0; xff=$clover_xff_count; rid=$clover_rid_made";
            proxy_set_header {SENDER_SERVICE} "{service}";
            proxy_set_header {SENDER_POD} "{pod}";
            proxy_set_header {COPY_TARGET} $request_uri;
            proxy_set_header {COPY_OF} $clover_server_span;
{trace_headers("$clover_copy_span")}            proxy_connect_timeout 1s;
            proxy_send_timeout 2s;
            proxy_read_timeout 2s;
        }}
"""  # noqa: E501
    forward = forwarding(service, pod, "$clover_bind", "$remote_addr", _host(config.proxy_path))
    formats = log_format("clover", blocked="$clover_blocked") + log_format(
        "clover_relay_failed", copy="1", relay="1", copy_span="$clover_copy_span", up_len="$upstream_response_length"
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
{_xff_count()}{upstream_block("clover_upstream", lbs)}{relay}\
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
        runtime.registry.inc(DROPPED, 0, help="Mirror copies dropped (backlog)")

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
            self._copy(entry)
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
            tags = self.tags(entry, self.inbound_stats.cluster)
            server = self.server_span(entry, tags, start_ns)
            self.client_spans(entry, server, tags, attempts, start_ns, end_ns, size, int(entry["client"], 16))
            finish(server, status, size, "client blocked" if blocked else None, end_time=end_ns)

    def _copy(self, entry: dict[str, str]) -> None:
        """One copy nginx sent to the IDS (the relay's line), or one the relay did not take."""
        if entry.get("relay"):
            refused = as_int(entry["status"]) == 503  # the relay holds MIRROR_BACKLOG copies already
            self.runtime.registry.inc(DROPPED if refused else ERRORS)
            return
        attempts = [a for a in self.attempts(entry) if a[0] is not None]
        status = as_int(entry["status"])
        if status >= 500 or not attempts or not attempts[-1][1]:
            self.runtime.registry.inc(ERRORS, help="Mirror copies that failed")
        if entry["sampled"] != "01" or not attempts:
            return
        # nginx's own clock, which lags the real one: the copy's span never seems to start after
        # the IDS's (the graph finds a request's caller only in its own time bucket or the one before).
        end = float(entry["msec"])
        took = as_seconds(entry["rt"])
        sampled = TraceFlags(TraceFlags.SAMPLED)
        server = NonRecordingSpan(SpanContext(int(entry["trace"], 16), int(entry["server"], 16), False, sampled))
        size = as_int(entry["up_len"].split(", ")[-1])
        start_ns, end_ns = int((end - took) * 1e9), int(end * 1e9)
        tags = self.tags(entry, "")
        self.client_spans(entry, server, tags, attempts[-1:], start_ns, end_ns, size, int(entry["copy_span"], 16))

    def _refresh(self) -> None:
        super()._refresh()
        self.gateway_stats.gauges["upstream_cx_active"] = self.inbound_stats.gauges["upstream_cx_active"]
        self.runtime.registry.set("clover_sdc_proxy_blocked_clients", len(self.blocklist.active()),
                                  "Client IPs currently blocked")  # fmt: skip
        # Each copy in the relay holds its connection there until the IDS answered it.
        process = self.listener.process
        in_flight = unix_connections(process.pid, socket_dir(self.listener.home) / RELAY_SOCKET) if process else 0
        self.runtime.registry.set("clover_sdc_proxy_mirrors_in_flight", in_flight,
                                  "Mirrored copies not yet answered by the IDS")  # fmt: skip
