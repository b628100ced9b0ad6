"""proxy-access-control's authorization check against modsecurity-crs, as Envoy's ``ext_authz``
HTTP filter made it at the original's ingress gateway.

The check is the request itself, sent to the WAF: the method, the path and query as the client
sent them, its headers (the client's Host) plus ``X-Real-IP``/``X-Forwarded-For`` naming the
client, and at most ``waf_body_limit`` bytes of its body (``X-Envoy-Auth-Partial-Body: true``
when cut). A 2xx answer lets the request in; 401 and 403 become the client's 403; another 4xx
is passed on. No answer, or a 5xx, is a failure: ``waf_failure_mode`` "closed" answers 403,
"open" lets the request in. Each outcome is counted as Envoy counted it
(``envoy_http_proxy_access_control_ext_authz_{ok,denied,error,failure_mode_allowed}``) and the
counts are published to Redis (``waf_check``) for the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web

from clover import keys
from clover.config import Config
from sdc import topology
from sdc.forward import Inbound, Outgoing, UpstreamSet, error_response, forwarded_headers, relay
from sdc.names import HostPort, parse_host_port, short_name
from sdc.runtime import Runtime

log = logging.getLogger(__name__)

WAF_SERVICE = "modsecurity-crs"
PARTIAL_BODY_HEADER = "X-Envoy-Auth-Partial-Body"
OUTCOMES = ("ok", "denied", "error", "failure_mode_allowed")
PUBLISH_SECONDS = 2.0


def ext_authz_metric(service: str, outcome: str) -> str:
    """Envoy's ``http.<stat prefix>.ext_authz.<outcome>`` as Istio's statsd bridge named it."""
    return f"envoy_http_{keys.underscore(service)}_ext_authz_{outcome}"


def waf_address(cfg: Config) -> HostPort:
    """Where the proxy sends its checks: ``CLOVER_WAF_ADDRESS``, else the chain's modsecurity-crs pod."""
    if cfg.waf_address:
        return parse_host_port(cfg.waf_address, field="CLOVER_WAF_ADDRESS")
    return HostPort(WAF_SERVICE, topology.waf_http_port())


@dataclass
class Verdict:
    """The check's outcome: ``refusal`` is the client's answer when the request may not pass;
    ``body`` is the request body to forward (a streamed body's first bytes were read for the check)."""

    body: bytes | AsyncIterable[bytes]
    refusal: web.Response | None = None
    reason: str = ""


async def split_head(body: AsyncIterable[bytes], limit: int) -> tuple[bytes, AsyncIterable[bytes]]:
    """The first ``limit`` bytes of a streamed body, and the whole body to stream on."""
    stream = aiter(body)
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        try:
            chunk = await anext(stream)
        except StopAsyncIteration:
            break
        chunks.append(chunk)
        size += len(chunk)

    async def whole() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk
        async for chunk in stream:
            yield chunk

    return b"".join(chunks)[:limit], whole()


class WafCheck:
    def __init__(self, runtime: Runtime):
        cfg = runtime.cfg
        self.runtime = runtime
        self.enabled = cfg.waf_check
        self.fail_open = cfg.waf_failure_mode == "open"
        self.body_limit = cfg.waf_body_limit
        self.address = waf_address(cfg)
        self.upstream = UpstreamSet(runtime, [self.address])
        if self.enabled:
            self.upstream.declare(short_name(self.address.host), self.address.port)
        self.counts = dict.fromkeys(OUTCOMES, 0)
        for outcome in OUTCOMES:
            runtime.registry.metric(ext_authz_metric(runtime.spec.service, outcome), "counter",
                                    f"Authorization checks by the WAF: {outcome.replace('_', ' ')}")  # fmt: skip
        self.redis: aioredis.Redis | None = None
        self._publisher: asyncio.Task[None] | None = None

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        self.runtime.registry.inc(ext_authz_metric(self.runtime.spec.service, outcome))

    async def check(
        self, request: web.BaseRequest, inbound: Inbound, request_id: str, body: bytes | AsyncIterable[bytes]
    ) -> Verdict:
        if isinstance(body, bytes):
            head, partial = body[: self.body_limit], len(body) > self.body_limit
        else:
            head, body = await split_head(body, self.body_limit + 1)
            head, partial = head[: self.body_limit], len(head) > self.body_limit
        headers = forwarded_headers(request, inbound, request.host, True, request_id)
        if partial:
            headers.append((PARTIAL_BODY_HEADER, "true"))
        out = Outgoing(request.method, request.raw_path, request.headers.get("User-Agent", ""), len(head))
        candidates = await self.upstream.ordered()
        answer, error = None, f"{self.address.host} resolves to no address"
        if candidates:
            answer, _, error = await relay(self.runtime, out, candidates, headers, head, inbound.span)
        name = self.runtime.name
        if answer is not None and 200 <= answer.status < 300:
            self._count("ok")
            return Verdict(body)
        if answer is not None and answer.status < 500:
            self._count("denied")
            status = 403 if answer.status in (401, 403) else answer.status
            text = f"The web application firewall ({WAF_SERVICE}) refused this request."
            return Verdict(body, error_response(status, text, name), f"refused by {WAF_SERVICE} ({answer.status})")
        self._count("error")
        why = f"{WAF_SERVICE} answered {answer.status}" if answer is not None else error
        if self.fail_open:
            self._count("failure_mode_allowed")
            log.debug("WAF check failed (%s): let through (fail-open)", why)
            return Verdict(body)
        text = f"The web application firewall ({WAF_SERVICE}) could not check this request."
        return Verdict(body, error_response(403, text, name), f"WAF check failed: {why}")

    # -- reporting ---------------------------------------------------------------------------

    def start(self) -> None:
        self._publisher = asyncio.create_task(self._publish_changes())

    def report(self) -> dict[str, str]:
        return {
            "pod": self.runtime.name,
            "enabled": str(int(self.enabled)),
            "failure_mode": "open" if self.fail_open else "closed",
            "body_limit": str(self.body_limit),
            "address": str(self.address),
            **{k: str(v) for k, v in self.counts.items()},
            "updated": f"{time.time():.3f}",
        }

    async def _publish(self) -> None:
        if self.redis is None:
            self.redis = aioredis.Redis.from_url(self.runtime.cfg.redis_url, decode_responses=True, socket_timeout=3)
        await self.redis.hset(keys.WAF_CHECK, mapping=self.report())  # type: ignore[arg-type]  # str values

    async def _publish_changes(self) -> None:
        published: dict[str, int] | None = None
        while True:
            if published != self.counts:
                try:
                    await self._publish()
                    published = dict(self.counts)
                except (aioredis.RedisError, OSError) as exc:
                    log.warning("cannot publish the WAF check counts to Redis: %s", exc)
            await asyncio.sleep(PUBLISH_SECONDS)

    async def stop(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
        with contextlib.suppress(aioredis.RedisError, OSError):
            await self._publish()
        if self.redis is not None:
            await self.redis.aclose()
        self.upstream.close()
