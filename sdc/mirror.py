"""The proxy's copies to the IDS: sent without waiting, pipelined over a few keep-alive connections.

A copy is queued and the client's request goes on; ``CONNECTIONS`` senders each keep one
connection to the IDS and write what is queued in one go, behind the copies already written
(HTTP/1.1 pipelining), while a reader per connection takes the answers in order: it ends each
copy's CLIENT span (when its request was sampled) and counts it in the snort-ids outbound
statistics. At most ``backlog`` copies are queued or unanswered; a copy beyond that is dropped
and counted (``clover_sdc_proxy_mirror_dropped_total``) rather than slowing the clients down.
When the IDS cannot be reached, the copies queued and those written but not answered are
counted in ``clover_sdc_proxy_mirror_errors_total``, and copies arriving before the next
attempt (``RETRY_SECONDS`` later) are counted there too, without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass

from opentelemetry.trace import Span, SpanKind

from sdc.forward import Target, UpstreamSet
from sdc.runtime import Runtime, elapsed_ms
from sdc.tracing import finish, http_tags, operation_name
from sdc.upstream import ConnectFailed, encode_head

log = logging.getLogger(__name__)

CONNECTIONS = 2
RETRY_SECONDS = 1.0
BATCH = 64
ERRORS = "clover_sdc_proxy_mirror_errors_total"
DROPPED = "clover_sdc_proxy_mirror_dropped_total"


@dataclass
class Copy:
    """One request copied for the IDS (``headers`` without framing or trace context)."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    user_agent: str
    request_id: str
    parent: Span
    span: Span | None = None
    start: float = 0.0
    sent: int = 0


class MirrorSender:
    def __init__(self, runtime: Runtime, upstream: UpstreamSet, backlog: int, connections: int = CONNECTIONS):
        self.runtime = runtime
        self.upstream = upstream
        self.backlog = backlog
        self.connections = connections
        self.queue: deque[Copy] = deque()
        self.unanswered = 0
        self.retry_at = 0.0
        self.wakeup = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def in_flight(self) -> int:
        return len(self.queue) + self.unanswered

    def accepts(self) -> bool:
        """Whether a copy can be taken now; when not, the copy is counted as dropped or failed."""
        if self.in_flight >= self.backlog:
            self.runtime.registry.inc(DROPPED, help="Mirror copies dropped (backlog)")
            return False
        if time.monotonic() < self.retry_at:
            self._count_failed(1)
            return False
        return True

    def submit(self, copy: Copy) -> None:
        """Queue a copy (after ``accepts``)."""
        if not self.tasks:
            self.tasks = [asyncio.create_task(self._send()) for _ in range(self.connections)]
        self.queue.append(copy)
        self.wakeup.set()

    def restart(self) -> None:
        """New connections for the next copies (the mirror moved); the current ones end."""
        self.retry_at = 0.0
        for task in self.tasks:
            task.cancel()
        self.tasks = []
        if self.queue:
            self.tasks = [asyncio.create_task(self._send()) for _ in range(self.connections)]

    async def close(self, grace: float) -> None:
        """Let queued and unanswered copies finish for up to ``grace`` seconds, then stop."""
        deadline = time.monotonic() + grace
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def _failed(self, copies: list[Copy], target: Target | None, error: str) -> None:
        for copy in copies:
            if copy.span is not None:
                assert target is not None
                target.stats.gauges["upstream_rq_active"] -= 1
                finish(copy.span, 503, 0, error)
        if copies:
            self._count_failed(len(copies))

    def _count_failed(self, n: int) -> None:
        self.runtime.registry.inc(ERRORS, n, help="Mirror copies that failed")

    async def _send(self) -> None:
        while True:
            while not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
            candidates = await self.upstream.ordered()
            if not candidates:
                self._give_up(None, "the mirror resolves to no address")
                continue
            target = candidates[0]
            try:
                conn = await target.pool.open()
            except ConnectFailed as exc:
                self._give_up(target, str(exc))
                continue
            written: deque[Copy] = deque()
            reading = asyncio.create_task(self._read(conn.reader, written, target))
            try:
                while not reading.done():
                    if not self.queue:
                        self.wakeup.clear()
                        await self.wakeup.wait()
                        continue
                    conn.writer.write(self._take(target, written))
                    await conn.writer.drain()
            except (ConnectionError, OSError) as exc:
                log.debug("mirror connection to %s:%s broke: %s", target.ip, target.port, exc)
            finally:
                conn.close()
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reading
                self.unanswered -= len(written)
                self._failed(list(written), target, "the IDS closed the connection")

    def _give_up(self, target: Target | None, error: str) -> None:
        log.debug("mirror: %s", error)
        self.retry_at = time.monotonic() + RETRY_SECONDS
        copies = list(self.queue)
        self.queue.clear()
        self._failed(copies, None, error)

    def _take(self, target: Target, written: deque[Copy]) -> bytes:
        """The queued copies (up to BATCH) as bytes to write, each with its span started."""
        tel = self.runtime.telemetry
        name = operation_name(target.fqdn, target.port)
        parts: list[bytes] = []
        n = min(BATCH, len(self.queue))
        for _ in range(n):
            copy = self.queue.popleft()
            tags = http_tags(url=f"http://{target.label}{copy.target}", method=copy.method, user_agent=copy.user_agent,
                             request_size=len(copy.body), upstream_cluster=target.cluster, request_id=copy.request_id,
                             peer=f"{target.ip}:{target.port}")  # fmt: skip
            copy.span = tel.start(name, SpanKind.CLIENT, copy.parent, tags)
            carrier: dict[str, str] = {}
            tel.inject(carrier, copy.span)
            framing = []
            if copy.body or copy.method in ("POST", "PUT", "PATCH"):
                framing = [("Content-Length", str(len(copy.body)))]
            head = encode_head(copy.method, copy.target, [*copy.headers, *carrier.items(), *framing])
            parts += (head, copy.body)
            copy.sent = len(head) + len(copy.body)
            copy.start = time.perf_counter()
            target.stats.request_started()
            written.append(copy)
        self.unanswered += n
        return b"".join(parts)

    async def _read(self, reader: asyncio.StreamReader, written: deque[Copy], target: Target) -> None:
        try:
            while True:
                try:
                    answer, keep_alive = await target.pool.read_response(reader, "GET")
                except Exception as exc:  # the connection ended or the answer was malformed: both end it
                    log.debug("mirror answer from %s:%s: %s", target.ip, target.port, exc)
                    return
                if not written:
                    return  # an answer nothing asked for
                copy = written.popleft()
                self.unanswered -= 1
                target.stats.request_finished(answer.status, elapsed_ms(copy.start), answer.rx_bytes, copy.sent)
                assert copy.span is not None
                finish(copy.span, answer.status, len(answer.body))
                if not keep_alive:
                    return
        finally:
            self.wakeup.set()  # the sender notices the connection is over
