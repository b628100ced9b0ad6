"""Relaying an HTTP request to an upstream pod: headers, failover, spans and stats.

Shared by the proxy and the load balancers. Header handling follows the original nginx
templates: ``X-Forwarded-For`` (the client, appended to what came in), ``X-Real-IP`` (the
client, set by the first hop and kept by the next), ``X-Forwarded-Proto: http``; ``Host`` is
the upstream as configured (nginx's ``$proxy_host``); answers get a ``Via`` entry per hop.
Like nginx's ``proxy_next_upstream error``, a request whose connection cannot be made goes
to the next server, and that server is skipped for ``FAIL_TIMEOUT`` seconds (max_fails=1).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from aiohttp import web
from multidict import CIMultiDict
from opentelemetry.trace import Span, SpanKind

from sdc import topology
from sdc.accesslog import UNKNOWN, AccessEntry, timestamp
from sdc.metrics import ClusterStats
from sdc.names import HostPort, ResolveError
from sdc.runtime import Runtime, elapsed_ms
from sdc.tracing import finish, http_tags, operation_name, traceresponse
from sdc.upstream import HOP_BY_HOP, ConnectFailed, Pool, Response, UpstreamError

FAIL_TIMEOUT = 10.0
BUFFER_LIMIT = 1024 * 1024
MIRROR_BODY_LIMIT = 64 * 1024

TRACE_HEADERS = frozenset({"traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
                           "x-b3-sampled", "x-b3-flags"})  # fmt: skip
# Who sent a request, as Envoy names the downstream to the next hop (its --service-cluster and
# --service-node): each hop replaces them with its own service and pod, and the receiver logs them
# as ``source`` and ``user`` where it cannot tell the sender by address (the cluster).
SENDER_SERVICE = "x-envoy-downstream-service-cluster"
SENDER_POD = "x-envoy-downstream-service-node"
SENDER_HEADERS = frozenset({SENDER_SERVICE, SENDER_POD})
# Added by this chain's hops; the IDS removes them to see the request as the client sent it.
FORWARDING_HEADERS = frozenset({"x-forwarded-for", "x-real-ip", "x-forwarded-proto", "forwarded",
                                "x-clover-mirror"}) | SENDER_HEADERS  # fmt: skip


@dataclass
class Target:
    """One upstream address and its keep-alive pool."""

    label: str
    service: str
    ip: str
    port: int
    pool: Pool
    stats: ClusterStats
    failed_until: float = 0.0

    @property
    def fqdn(self) -> str:
        if self.service == self.ip:
            return self.ip
        return f"{self.service}.{topology.NAMESPACE}.{topology.CLUSTER_DOMAIN}"

    @property
    def cluster(self) -> str:
        return self.stats.cluster


def rotate(targets: list[Target], start: int) -> list[Target]:
    """Targets in the order to try: round-robin from ``start``, failed ones last."""
    if not targets:
        return []
    i = start % len(targets)
    order = targets[i:] + targets[:i]
    now = time.monotonic()
    healthy = [t for t in order if t.failed_until <= now]
    return healthy + [t for t in order if t.failed_until > now]


class Received(NamedTuple):
    """What a pod's bookkeeping needs of a request it received (``headers``: lookups by lowercase name)."""

    method: str
    host: str
    target: str
    headers: Mapping[str, str]
    size: int
    client_ip: str
    client_port: int

    @classmethod
    def of(cls, request: web.BaseRequest) -> Received:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        return cls(request.method, request.host, request.raw_path, request.headers, request.content_length or 0,
                   peer[0] if peer else "", peer[1] if peer else 0)  # fmt: skip


class Inbound:
    """The bookkeeping of one request a pod received: its SERVER span and inbound stats."""

    def __init__(self, runtime: Runtime, received: Received, stats: ClusterStats, port: int):
        self.runtime = runtime
        self.received = received
        self.stats = stats
        self.start = time.perf_counter()
        self.client_ip = received.client_ip
        self.client_port = received.client_port
        self.request_id = received.headers.get("x-request-id", "")
        self.request_size = received.size
        tel = runtime.telemetry
        span = tel.unsampled_child(received.headers)
        if span is None:
            tags = http_tags(
                url=f"http://{received.host}{received.target}",
                method=received.method,
                user_agent=received.headers.get("user-agent", ""),
                request_size=self.request_size,
                upstream_cluster=stats.cluster,
                request_id=self.request_id,
                peer=f"{self.client_ip}:{self.client_port}",
            )
            name = operation_name(runtime.spec.fqdn, port)
            span = tel.start(name, SpanKind.SERVER, tel.extract(received.headers), tags)
        self.span = span
        self.traceresponse = traceresponse(span)
        stats.request_started()

    @classmethod
    def of(cls, runtime: Runtime, request: web.BaseRequest, stats: ClusterStats, port: int) -> Inbound:
        return cls(runtime, Received.of(request), stats, port)

    def done(self, response: web.StreamResponse, error: str | None = None) -> web.StreamResponse:
        size = response.content_length or 0
        tr = self.finish(response.status, size, error)
        if tr:
            response.headers["traceresponse"] = tr
        return response

    def finish(self, status: int, size: int, error: str | None = None) -> str | None:
        """Count, end the span and log the answer; returns its ``traceresponse`` value."""
        self.stats.request_finished(status, elapsed_ms(self.start), self.request_size, size)
        finish(self.span, status, size, error)
        self._log(status, size)
        return self.traceresponse

    def sender(self) -> tuple[str, str]:
        """(service, pod) of the chain's pod that sent the request: by its address, else as it named
        itself; ``unknown`` for a client outside the chain."""
        known = self.runtime.sources.get(self.client_ip)
        if known is not None:
            return known
        headers = self.received.headers
        return headers.get(SENDER_SERVICE, UNKNOWN), headers.get(SENDER_POD, UNKNOWN)

    def _log(self, status: int, size: int) -> None:
        runtime, received = self.runtime, self.received
        source, user = self.sender()
        ids = self.span.get_span_context()
        runtime.access_log.write(
            AccessEntry(
                time=timestamp(time.time()), stream=runtime.log_stream, pod=runtime.name, source=source, user=user,
                destination=runtime.spec.service, responseCode=status, responseSize=size,
                latency=round(elapsed_ms(self.start), 3), method=received.method,
                url=f"http://{received.host}{received.target}", userAgent=received.headers.get("user-agent", ""),
                traceId=f"{ids.trace_id:032x}", spanId=f"{ids.span_id:016x}", requestId=self.request_id,
            )
        )  # fmt: skip


def sender_headers(runtime: Runtime) -> list[tuple[str, str]]:
    """This pod named to the next hop (what Envoy sends)."""
    return [(SENDER_SERVICE, runtime.spec.service), (SENDER_POD, runtime.name)]


def forwarded_headers(
    request: web.BaseRequest, inbound: Inbound, host: str, first_hop: bool, request_id: str
) -> list[tuple[str, str]]:
    """The request's end-to-end headers plus the forwarding headers for the next hop."""
    client_ip = inbound.client_ip
    headers: list[tuple[str, str]] = [("Host", host), *sender_headers(inbound.runtime)]
    xff = []
    real_ip = None
    for raw_name, raw_value in request.raw_headers:
        name = raw_name.decode("latin-1")
        lname = name.lower()
        value = raw_value.decode("latin-1")
        if lname in HOP_BY_HOP or lname in TRACE_HEADERS or lname in SENDER_HEADERS:
            continue
        if lname == "x-forwarded-for":
            xff.append(value)
            continue
        if lname == "x-real-ip":
            real_ip = value
            continue
        if lname in ("x-forwarded-proto", "x-request-id"):
            continue
        headers.append((name, value))
    xff.append(client_ip)
    headers.append(("X-Forwarded-For", ", ".join(xff)))
    headers.append(("X-Real-IP", client_ip if first_hop or not real_ip else real_ip))
    headers.append(("X-Forwarded-Proto", "http"))
    headers.append(("X-Request-Id", request_id))
    return headers


def new_request_id() -> str:
    return str(uuid.uuid4())


async def request_body(request: web.BaseRequest) -> bytes | AsyncIterable[bytes]:
    """The body: read whole when small, else streamed through."""
    if not request.body_exists:
        return b""
    length = request.content_length
    if length is not None and length <= BUFFER_LIMIT:
        return await request.read()
    return _stream(request)


async def _stream(request: web.BaseRequest) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(64 * 1024):
        yield chunk


class Tee:
    """Streams a body through while keeping its first bytes (for the IDS mirror)."""

    def __init__(self, body: AsyncIterable[bytes], limit: int = MIRROR_BODY_LIMIT):
        self.body = body
        self.limit = limit
        self.head = bytearray()
        self.total = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.body:
            self.total += len(chunk)
            if len(self.head) < self.limit:
                self.head += chunk[: self.limit - len(self.head)]
            yield chunk


@dataclass(frozen=True)
class Outgoing:
    """What is relayed: request line and the facts the span needs."""

    method: str
    path: str
    user_agent: str
    size: int

    @classmethod
    def of(cls, request: web.BaseRequest) -> Outgoing:
        ua = request.headers.get("User-Agent", "")
        return cls(request.method, request.raw_path, ua, request.content_length or 0)


async def relay(
    runtime: Runtime,
    out: Outgoing,
    candidates: list[Target],
    headers: list[tuple[str, str]],
    body: bytes | AsyncIterable[bytes],
    parent: Span,
) -> tuple[Response | None, Target | None, str]:
    """Send the request to the first candidate that accepts a connection.

    Returns (answer, target, "") or (None, last target tried, error text)."""
    tel = runtime.telemetry
    error = "no upstream"
    last: Target | None = None
    for target in candidates:
        last = target
        tags = http_tags(
            url=f"http://{target.label}{out.path}",
            method=out.method,
            user_agent=out.user_agent,
            request_size=out.size,
            upstream_cluster=target.cluster,
            request_id=dict(headers).get("X-Request-Id", ""),
            peer=f"{target.ip}:{target.port}",
        )
        span = tel.start(operation_name(target.fqdn, target.port), SpanKind.CLIENT, parent, tags)
        carrier: dict[str, str] = {}
        tel.inject(carrier, span)
        start = time.perf_counter()
        target.stats.request_started()
        try:
            answer = await target.pool.request(out.method, out.path, [*headers, *carrier.items()], body)
        except ConnectFailed as exc:
            target.stats.gauges["upstream_rq_active"] -= 1
            target.failed_until = time.monotonic() + FAIL_TIMEOUT
            finish(span, 503, 0, str(exc))
            error = str(exc)
            continue
        except UpstreamError as exc:
            target.stats.request_finished(exc.status, elapsed_ms(start))
            finish(span, exc.status, 0, str(exc))
            return None, target, str(exc)
        except BaseException:
            target.stats.gauges["upstream_rq_active"] -= 1
            finish(span, 499, 0, "request abandoned")
            raise
        target.failed_until = 0.0
        target.stats.request_finished(answer.status, elapsed_ms(start), answer.rx_bytes, answer.tx_bytes)
        finish(span, answer.status, len(answer.body))
        return answer, target, ""
    return None, last, error


def client_response(answer: Response, via: str) -> web.Response:
    """The upstream's answer for the downstream client (framing headers are aiohttp's)."""
    headers: CIMultiDict[str] = CIMultiDict()
    previous_via = None
    for name, value in answer.headers:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname == "traceresponse":
            continue
        if lname == "via":
            previous_via = value
            continue
        headers.add(name, value)
    headers["Via"] = f"{previous_via}, 1.1 {via}" if previous_via else f"1.1 {via}"
    return web.Response(status=answer.status, reason=answer.reason or None, headers=headers, body=answer.body)


def error_page(status: int, text: str, via: str) -> str:
    """The HTML a hop answers with when it cannot forward (``text`` says why)."""
    reasons = {
        403: "Forbidden",
        404: "Not Found",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }
    title = f"{status} {reasons.get(status, 'Error')}"
    return f"<html><head><title>{title}</title></head><body><h1>{title}</h1><p>{text}</p><hr>{via}</body></html>\n"


def error_response(status: int, text: str, via: str) -> web.Response:
    body = error_page(status, text, via)
    return web.Response(status=status, text=body, content_type="text/html", headers={"Via": f"1.1 {via}"})


class UpstreamSet:
    """The configured upstreams of a pod (``host:port`` entries) as round-robin targets.

    Names are resolved through the pod registry on use (cached briefly), so a service name
    follows its pods; connections are pooled per address and survive reconfiguration when
    the address stays."""

    def __init__(self, runtime: Runtime, entries: list[HostPort]):
        self.runtime = runtime
        self.entries = list(entries)
        self._targets: dict[tuple[str, int], Target] = {}
        self._next = 0

    async def targets(self) -> list[Target]:
        chosen: list[Target] = []
        for entry in self.entries:
            try:
                ips, service = await self.runtime.resolver.resolve_async(entry.host)
            except ResolveError:
                continue
            for ip in ips:
                key = (ip, entry.port)
                target = self._targets.get(key)
                if target is None:
                    stats = self.runtime.outbound(entry.port, service)
                    pool = Pool(ip, entry.port, self.runtime.placement, stats)
                    target = self._targets[key] = Target(str(entry), service, ip, entry.port, pool, stats)
                chosen.append(target)
        return chosen

    async def ordered(self) -> list[Target]:
        """Every target, starting from the next in the rotation."""
        targets = await self.targets()
        start = self._next
        self._next += 1
        return rotate(targets, start)

    def declare(self, service: str, port: int) -> None:
        """Create a cluster's stats before its first request (so its series exist at 0)."""
        self.runtime.outbound(port, service)

    async def replace(self, entries: list[HostPort]) -> None:
        """Switch to new entries; connections to addresses no longer used close once idle."""
        self.entries = list(entries)
        self._next = 0
        keep = {(t.ip, t.port) for t in await self.targets()}
        for key in list(self._targets):
            if key not in keep:
                self._targets.pop(key).pool.retire()

    def close(self) -> None:
        for target in self._targets.values():
            target.pool.retire()
