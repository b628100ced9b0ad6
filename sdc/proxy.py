"""proxy-access-control: access control, forwarding to http-lb, and the IDS mirror.

* Every request from a blocked client IP gets 403; ProcessAlerts blocks an alert's source IP
  for ``block_seconds`` (a new alert extends the block).
* Other requests under ``location_path`` go to ``proxy_path`` (default ``http://http-lb:9180``:
  the service's pods, v1 and v2, taken in turn like Istio's default round-robin).
* With the WAF on (``CLOVER_WAF=on``), a request that passed the block list is checked by
  modsecurity-crs first and forwarded only when it allows it (sdc/waf/check.py).
* Every request, blocked or not, is copied to ``mirror_path`` (default ``http://snort-ids:80``)
  once it has been answered, like the original's ``post_action``. The copy carries the
  client's headers plus ``X-Real-IP``/``X-Forwarded-For`` and an RFC 7239 ``Forwarded`` header
  with the client's and the proxy's address and port, and at most the first 64 KiB of the body
  (``X-Clover-Mirror`` says how long the body was). Copies are sent without waiting for them
  (``sdc.mirror``); copies beyond ``MIRROR_BACKLOG`` in flight are dropped and counted rather
  than slowing the clients down.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from clover import keys
from protos import nginx_pb2
from sdc import topology
from sdc.checks import host_port_field, path_field, port_field, resolve_reachable
from sdc.forward import (
    MIRROR_BODY_LIMIT,
    SENDER_HEADERS,
    TRACE_HEADERS,
    Inbound,
    Outgoing,
    Tee,
    UpstreamSet,
    client_response,
    error_response,
    forwarded_headers,
    new_request_id,
    relay,
    request_body,
    sender_headers,
)
from sdc.mirror import Copy, MirrorSender
from sdc.names import HostPort
from sdc.nginx_control import MODIFIED, PROCESSED, HttpService
from sdc.runtime import ConfigRefused, HttpListener, Runtime
from sdc.upstream import HOP_BY_HOP
from sdc.waf.check import WafCheck

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)


MIRROR_BACKLOG = 512
# The copy's own values of these replace what the client or a hop sent.
REPLACED_IN_COPY = frozenset({"x-real-ip", "forwarded", "x-clover-mirror"}) | SENDER_HEADERS
MAX_BLOCK_SECONDS = 7 * 24 * 3600
MIRROR_OFF = "off"
BLOCKED_TEXT = "Your address is blocked after an intrusion alert."


@dataclass
class ProxyConfig:
    server_port: int = topology.HTTP_PORT
    server_name: str = "proxy-access-control"
    location_path: str = "/"
    proxy_path: str = f"http://http-lb:{topology.HTTP_PORT}"
    mirror_path: str = "http://snort-ids:80"
    block_seconds: int = 60


@dataclass
class Block:
    ip: str
    blocked_at: float
    blocked_until: float
    event_id: str = ""
    signature_id: str = ""
    msg: str = ""


@dataclass
class Blocklist:
    """Client IPs refused until a deadline (wall clock, so it can be reported)."""

    entries: dict[str, Block] = field(default_factory=dict)

    def block(self, entry: Block) -> None:
        current = self.entries.get(entry.ip)
        if current is None or current.blocked_until < entry.blocked_until:
            self.entries[entry.ip] = entry

    def is_blocked(self, ip: str, now: float | None = None) -> bool:
        entry = self.entries.get(ip)
        if entry is None:
            return False
        if (time.time() if now is None else now) >= entry.blocked_until:
            del self.entries[ip]
            return False
        return True

    def active(self, now: float | None = None) -> list[Block]:
        now = time.time() if now is None else now
        for ip in [ip for ip, e in self.entries.items() if e.blocked_until <= now]:
            del self.entries[ip]
        return sorted(self.entries.values(), key=lambda e: e.ip)


class ProxyControl:
    """What the proxy keeps whichever data plane answers: its configuration, checked as a whole,
    the block list and the alerts that fill it."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.config = ProxyConfig(block_seconds=runtime.cfg.sdc_block_seconds)
        if runtime.mode == "loopback" and topology.ids_http_port() != 80:
            self.config.mirror_path = f"http://snort-ids:{topology.ids_http_port()}"
        self.blocklist = Blocklist()
        self.redis: aioredis.Redis | None = None

    async def checked(self, request: nginx_pb2.ConfigProxy) -> tuple[ProxyConfig, HostPort | None, HostPort | None]:
        """The configuration a ModifyProxy asks for, every field checked, and the new upstream and
        mirror entries (None: unchanged); raises ConfigRefused naming the field. Changes nothing."""
        current = self.config
        port = port_field(request.server_port, "server_port", current.server_port)
        location = path_field(request.location_path, "location_path", current.location_path)
        if request.block_seconds < 0 or request.block_seconds > MAX_BLOCK_SECONDS:
            raise ConfigRefused(f"block_seconds {request.block_seconds} must be within 0..{MAX_BLOCK_SECONDS}")
        proxy_path = current.proxy_path
        upstream_entry = None
        if request.proxy_path.strip():
            upstream_entry = host_port_field(request.proxy_path, "proxy_path", 80)
            await resolve_reachable(self.runtime.resolver, self.runtime.placement, upstream_entry, "proxy_path")
            proxy_path = f"http://{upstream_entry}"
        mirror_path = current.mirror_path
        mirror_entry = None
        if request.mirror_path.strip() == MIRROR_OFF:
            mirror_path = MIRROR_OFF
        elif request.mirror_path.strip():
            mirror_entry = host_port_field(request.mirror_path, "mirror_path", 80)
            await resolve_reachable(self.runtime.resolver, self.runtime.placement, mirror_entry, "mirror_path")
            mirror_path = f"http://{mirror_entry}"
        config = ProxyConfig(
            server_port=port,
            server_name=request.server_name or current.server_name,
            location_path=location,
            proxy_path=proxy_path,
            mirror_path=mirror_path,
            block_seconds=request.block_seconds or current.block_seconds,
        )
        return config, upstream_entry, mirror_entry

    async def block(self, request: nginx_pb2.AlertMessage) -> Block:
        """The block a ProcessAlerts asks for (the alert's source IP, for ``block_seconds``), checked;
        raises ConfigRefused naming the field. Changes nothing (``record`` does)."""
        source_ip, signature_id, msg = request.source_ip.strip(), request.signature_id, request.msg
        if not source_ip:
            if not request.event_id:
                raise ConfigRefused("source_ip or event_id is required")
            fields = await self._alert_fields(request.event_id)
            source_ip = fields.get("source-ip", "")
            signature_id = signature_id or fields.get("signature-id", "")
            msg = msg or fields.get("msg", "")
            if not source_ip:
                raise ConfigRefused(
                    f"event_id {request.event_id}: {keys.snort_event(request.event_id)} has no source-ip"
                )
        try:
            ipaddress.ip_address(source_ip)
        except ValueError:
            raise ConfigRefused(f"source_ip {source_ip!r} is not an IP address") from None
        if request.block_seconds < 0 or request.block_seconds > MAX_BLOCK_SECONDS:
            raise ConfigRefused(f"block_seconds {request.block_seconds} must be within 0..{MAX_BLOCK_SECONDS}")
        seconds = request.block_seconds or self.config.block_seconds
        now = time.time()
        return Block(source_ip, now, now + seconds, request.event_id, signature_id, msg)

    def record(self, entry: Block) -> None:
        """Put a checked block (``block``) on the list, once the data plane applies it."""
        self.blocklist.block(entry)
        self.runtime.registry.inc("clover_sdc_proxy_alerts_processed_total", help="ProcessAlerts calls applied")
        log.info("blocked %s for %.0fs after alert %s (sid %s %s)", entry.ip, entry.blocked_until - entry.blocked_at,
                 entry.event_id, entry.signature_id, entry.msg)  # fmt: skip

    async def _alert_fields(self, event_id: str) -> dict[str, str]:
        import redis.asyncio as aioredis

        if self.redis is None:
            self.redis = aioredis.Redis.from_url(self.runtime.cfg.redis_url, decode_responses=True, socket_timeout=3)
        try:
            fields = await self.redis.hgetall(keys.snort_event(event_id))
            return {_text(k): _text(v) for k, v in fields.items()}
        except Exception as exc:
            raise ConfigRefused(f"event_id {event_id}: cannot read the alert from Redis: {exc}") from None

    def dump(self, kind: str, blocks: list[Block] | None = None) -> nginx_pb2.ConfigDump:
        """The configuration and ``blocks`` (default: the clients blocked now)."""
        c = self.config
        proxy = nginx_pb2.ConfigProxy(
            server_port=str(c.server_port),
            server_name=c.server_name,
            location_path=c.location_path,
            proxy_path=c.proxy_path,
            mirror_path=c.mirror_path,
            block_seconds=c.block_seconds,
        )
        blocked = [
            nginx_pb2.BlockedClient(
                ip=b.ip, blocked_at=b.blocked_at, blocked_until=b.blocked_until, event_id=b.event_id,
                signature_id=b.signature_id, msg=b.msg,
            )
            for b in (self.blocklist.active() if blocks is None else blocks)
        ]  # fmt: skip
        return nginx_pb2.ConfigDump(kind=kind, pod=self.runtime.name, proxy=proxy, blocked=blocked)


class Proxy(HttpService):
    kind = "proxy"
    listener: HttpListener

    def __init__(self, runtime: Runtime):
        super().__init__(runtime)
        self.control = ProxyControl(runtime)
        self.blocklist = self.control.blocklist
        self.upstream = UpstreamSet(runtime, [_host_port(self.config.proxy_path)])
        self.mirror = UpstreamSet(runtime, [_host_port(self.config.mirror_path)])
        self.upstream.declare("http-lb", topology.HTTP_PORT)
        self.mirror.declare("snort-ids", _host_port(self.config.mirror_path).port)
        self.inbound_stats = runtime.inbound(topology.HTTP_PORT)
        # Istio's ingress gateway would count these for its calls to the proxy (see sdc/metrics.py).
        self.gateway_stats = runtime.outbound(topology.HTTP_PORT, runtime.spec.service)
        self.listener = HttpListener(runtime, self.handle, self.inbound_stats)
        self.sender = MirrorSender(runtime, self.mirror, MIRROR_BACKLOG)
        self.waf = WafCheck(runtime)
        runtime.refreshers.append(self._refresh)

    @property
    def config(self) -> ProxyConfig:
        return self.control.config

    def _refresh(self) -> None:
        self.listener.server.refresh()
        self.gateway_stats.gauges["upstream_cx_active"] = self.inbound_stats.gauges["upstream_cx_active"]
        self.runtime.registry.set("clover_sdc_proxy_blocked_clients", len(self.blocklist.active()),
                                  "Client IPs currently blocked")  # fmt: skip
        self.runtime.registry.set("clover_sdc_proxy_mirrors_in_flight", self.sender.in_flight,
                                  "Mirrored copies not yet answered by the IDS")  # fmt: skip

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        config = self.config
        inbound = Inbound.of(self.runtime, request, self.inbound_stats, self.listener.port)
        self.gateway_stats.request_started()
        request_id = inbound.request_id or new_request_id()
        body: bytes | AsyncIterable[bytes] = b""
        if self.blocklist.is_blocked(inbound.client_ip):
            self.runtime.registry.inc("clover_sdc_proxy_blocked_requests_total", help="Requests refused with 403")
            if request.body_exists:
                body = await request.read() if (request.content_length or 0) <= MIRROR_BODY_LIMIT else b""
            response = error_response(403, BLOCKED_TEXT, self.runtime.name)
            error: str | None = "client blocked"
        elif not request.path.startswith(config.location_path):
            response, error = error_response(404, f"no location matches {request.path}", self.runtime.name), None
        else:
            body = await request_body(request)
            refusal: web.Response | None = None
            if self.waf.enabled:
                verdict = await self.waf.check(request, inbound, request_id, body)
                body, refusal, error = verdict.body, verdict.refusal, verdict.reason
            if refusal is not None:
                response = refusal
            else:
                if not isinstance(body, bytes):
                    body = Tee(body)  # its head is the IDS copy's body
                response, error = await self._forward(request, inbound, request_id, body)
        inbound.done(response, error)
        self.gateway_stats.request_finished(
            response.status, (time.perf_counter() - inbound.start) * 1000, inbound.request_size,
            response.content_length or 0,
        )  # fmt: skip
        if config.mirror_path != MIRROR_OFF:
            self._mirror(request, inbound, request_id, body)
        return response

    async def _forward(
        self, request: web.BaseRequest, inbound: Inbound, request_id: str, body: bytes | AsyncIterable[bytes]
    ) -> tuple[web.Response, str | None]:
        candidates = await self.upstream.ordered()
        if not candidates:
            error = f"{self.config.proxy_path} resolves to no address"
            return error_response(503, error, self.runtime.name), error
        headers = forwarded_headers(request, inbound, candidates[0].label, True, request_id)
        answer, _, error = await relay(self.runtime, Outgoing.of(request), candidates, headers, body, inbound.span)
        if answer is not None:
            return client_response(answer, self.runtime.name), None
        status = 504 if "did not answer" in error else 502
        return error_response(status, error, self.runtime.name), error

    # -- the IDS copy ------------------------------------------------------------------------

    def _mirror(self, request: web.BaseRequest, inbound: Inbound, request_id: str, body: object) -> None:
        if not self.sender.accepts():
            return
        if isinstance(body, Tee):
            copy, total = bytes(body.head), body.total
        elif isinstance(body, bytes):
            copy, total = body[:MIRROR_BODY_LIMIT], len(body)
        else:
            copy, total = b"", inbound.request_size
        headers: list[tuple[str, str]] = []
        for raw_name, raw_value in request.raw_headers:
            name = raw_name.decode("latin-1")
            lname = name.lower()
            if lname in HOP_BY_HOP and lname != "host":
                continue
            if lname in TRACE_HEADERS or lname in REPLACED_IN_COPY:
                continue
            headers.append((name, raw_value.decode("latin-1")))
        xff = [e.strip() for v in request.headers.getall("X-Forwarded-For", []) for e in v.split(",") if e.strip()]
        headers += [
            *sender_headers(self.runtime),
            ("X-Forwarded-For", ", ".join([*xff, inbound.client_ip])),
            ("X-Real-IP", inbound.client_ip),
            ("X-Forwarded-Proto", "http"),
            ("Forwarded", f'for="{inbound.client_ip}:{inbound.client_port}";'
                          f'by="{self.runtime.ip}:{self.listener.port}";proto=http'),
            ("X-Clover-Mirror", f"length={total}; truncated={int(total > len(copy))}; xff={len(xff)}; "
                                f"rid={int(not inbound.request_id)}"),
        ]  # fmt: skip
        if not inbound.request_id:
            headers.append(("X-Request-Id", request_id))
        ua = request.headers.get("User-Agent", "")
        self.sender.submit(Copy(request.method, request.raw_path, headers, copy, ua, request_id, inbound.span))

    # -- control -----------------------------------------------------------------------------

    async def modify_proxy(self, request: nginx_pb2.ConfigProxy) -> str:
        current = self.config
        config, upstream_entry, mirror_entry = await self.control.checked(request)
        if config.server_port != self.listener.port:
            try:
                await self.listener.rebind(config.server_port)
            except OSError as exc:
                raise ConfigRefused(f"server_port {config.server_port}: cannot listen: {exc.strerror or exc}") from None
        self.control.config = config
        if upstream_entry is not None:
            await self.upstream.replace([upstream_entry])
        if mirror_entry is not None and f"http://{mirror_entry}" != current.mirror_path:
            await self.mirror.replace([mirror_entry])
            self.sender.restart()
        return MODIFIED

    async def process_alert(self, request: nginx_pb2.AlertMessage) -> str:
        self.control.record(await self.control.block(request))
        return PROCESSED

    def dump(self) -> nginx_pb2.ConfigDump:
        return self.control.dump(self.kind)

    async def start(self) -> None:
        self.waf.start()

    async def stop(self) -> None:
        await self.waf.stop()
        await self.sender.close(2)
        self.upstream.close()
        self.mirror.close()


def _text(value: bytes | str) -> str:
    """A field of a reply read with decode_responses=True: str at run time, typed bytes | str by redis-py."""
    return value.decode() if isinstance(value, bytes) else value


def _host_port(url: str) -> HostPort:
    return host_port_field(url, "url", 80)
