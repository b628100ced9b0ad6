"""The snort-ids pod's HTTP sink: answers each copied request as soon as it is in, then passes it on.

The proxy's nginx keeps a connection (its relay's) until the copy is answered, so the sink
answers first: the request is read (an HTTP/1.1 head, then a ``Content-Length`` body of which
the first ``BODY_LIMIT`` bytes are kept), its SERVER span started and ``200`` written at once;
then the pod's inbound statistics, span and access-log entry are done and the copy goes to the
service's ``take``. Pipelined requests are answered in order. A request the sink cannot read gets
``400`` (``411`` for a body without ``Content-Length``, ``431`` for a head over ``HEAD_LIMIT``)
and its connection is closed. A connection idle for ``IDLE_SECONDS`` is closed; on ``close``,
idle connections end at once and one mid-request after its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from sdc.forward import Inbound, Received
from sdc.metrics import ClusterStats
from sdc.netns import LISTEN_BACKLOG
from sdc.runtime import Runtime

log = logging.getLogger(__name__)

BODY_LIMIT = 64 * 1024
HEAD_LIMIT = 64 * 1024
IDLE_SECONDS = 75.0
SWEEP_SECONDS = 5.0
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
HEADER_LINE = re.compile(rf"^({TOKEN.pattern}):[ \t]*((?:[^\r\n]*[^ \t\r\n])?)[ \t]*\r?$", re.MULTILINE)
REFUSALS = {400: "Bad Request", 411: "Length Required", 431: "Request Header Fields Too Large"}


class BadRequest(ValueError):
    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status


@dataclass
class Copy:
    """One request as the sink read it: ``headers`` as sent (names as spelt), ``body`` its kept head;
    its method and target are ``inbound.received``'s."""

    headers: list[tuple[str, str]]
    body: bytes
    inbound: Inbound


Take = Callable[[Copy], None]


@dataclass
class Head:
    method: str
    target: str
    headers: list[tuple[str, str]]
    by_name: dict[str, str]
    length: int
    keep_alive: bool
    expects_continue: bool


def parse_head(raw: bytes) -> Head:
    """An HTTP/1.x request head (without its blank line); BadRequest names what is wrong."""
    text = raw.decode("latin-1")
    request_line, _, block = text.partition("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not TOKEN.fullmatch(parts[0]) or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(400, f"not an HTTP/1.x request line: {request_line[:100]!r}")
    method, target, version = parts
    headers: list[tuple[str, str]] = HEADER_LINE.findall(block)
    if len(headers) != (block.count("\n") + 1 if block else 0):
        bad = next(line for line in block.split("\r\n") if not HEADER_LINE.fullmatch(line))
        raise BadRequest(400, f"not a header line: {bad[:100]!r}")
    lowered = [(name.lower(), value) for name, value in headers]
    by_name = dict(reversed(lowered))  # the first of a repeated header, as aiohttp's get()
    if "transfer-encoding" in by_name:
        raise BadRequest(411, "a body needs Content-Length here (Transfer-Encoding is not read)")
    length_text = by_name.get("content-length", "0")
    repeated = len(by_name) != len(lowered) and any(v != length_text for n, v in lowered if n == "content-length")
    if not length_text.isdigit() or repeated:
        raise BadRequest(400, f"Content-Length {length_text!r} is not one number")
    connection = by_name.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    expects = by_name.get("expect", "").lower() == "100-continue"
    return Head(method, target, headers, by_name, int(length_text), keep_alive, expects)


class SinkConnection(asyncio.Protocol):
    def __init__(self, sink: SinkListener):
        self.sink = sink
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.buffer = bytearray()
        self.head: Head | None = None
        self.body = bytearray()
        self.keep = 0  # body bytes kept: up to BODY_LIMIT
        self.to_skip = 0  # body bytes past BODY_LIMIT still to come
        self.last_active = time.monotonic()
        self.closing = False

    @property
    def idle(self) -> bool:
        return self.head is None and not self.buffer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass of asyncio's
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1]) if peer else ("", 0)
        self.sink.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.sink.closed(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        self.buffer += data
        try:
            while self.transport is not None and not self.transport.is_closing() and self._next():
                pass
        except BadRequest as exc:
            self._refuse(exc)

    def _next(self) -> bool:
        """Take what the buffer holds of the current request; True when one was answered."""
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > HEAD_LIMIT:
                    raise BadRequest(431, f"the request head is over {HEAD_LIMIT} bytes")
                return False
            self.head = parse_head(bytes(self.buffer[:end]))
            del self.buffer[: end + 4]
            self.keep = min(self.head.length, BODY_LIMIT)
            self.to_skip = self.head.length - self.keep
            self.body = bytearray()
            if self.head.expects_continue and self.head.length and self.transport is not None:
                self.transport.write(CONTINUE)
        head = self.head
        want = self.keep - len(self.body)
        if want:
            self.body += self.buffer[:want]
            del self.buffer[:want]
        if self.to_skip and len(self.body) == self.keep:
            skipped = min(self.to_skip, len(self.buffer))
            del self.buffer[:skipped]
            self.to_skip -= skipped
        if len(self.body) < self.keep or self.to_skip:
            return False
        self.head = None
        self._answer(head, bytes(self.body))
        return True

    def _answer(self, head: Head, body: bytes) -> None:
        assert self.transport is not None
        sink = self.sink
        received = Received(head.method, head.by_name.get("host", ""), head.target, head.by_name, head.length,
                            *self.peer)  # fmt: skip
        inbound = Inbound(sink.runtime, received, sink.stats, sink.port)
        close = not head.keep_alive or self.closing
        # The answer goes first: what follows is the pod's own bookkeeping.
        tr = inbound.traceresponse
        trace_line = b"traceresponse: %s\r\n" % tr.encode() if tr else b""
        close_line = b"Connection: close\r\n" if close else b""
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n%s%s\r\n" % (trace_line, close_line))
        if close:
            self.transport.close()
        inbound.finish(200, 0)
        try:
            sink.take(Copy(head.headers, body, inbound))
        except Exception:  # answered already: the next copies go on
            log.exception("passing on the copy of %s %s failed", head.method, head.target[:200])

    def _refuse(self, exc: BadRequest) -> None:
        if self.transport is None:
            return
        text = f"{exc}\n".encode()
        reason = REFUSALS[exc.status].encode()
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s" % (exc.status, reason, len(text), text))  # fmt: skip
        self.transport.close()

    def end(self) -> None:
        """Close now when idle, else after the request being read is answered."""
        self.closing = True
        if self.idle and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class SinkListener:
    """The sink on the pod's address: ``bind`` a port, ``close`` (letting requests being read finish)."""

    def __init__(self, runtime: Runtime, take: Take, stats: ClusterStats):
        self.runtime = runtime
        self.take = take
        self.stats = stats
        self.port = 0
        self.connections: set[SinkConnection] = set()
        self._servers: list[asyncio.Server] = []
        self._sweeper: asyncio.Task[None] | None = None

    async def bind(self, port: int) -> None:
        sock = self.runtime.placement.listener(port)
        loop = asyncio.get_running_loop()
        self._servers.append(await loop.create_server(lambda: SinkConnection(self), sock=sock, backlog=LISTEN_BACKLOG))
        self.port = port
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_idle())

    def opened(self, connection: SinkConnection) -> None:
        self.connections.add(connection)
        self.stats.counters["upstream_cx_total"] += 1

    def closed(self, connection: SinkConnection) -> None:
        self.connections.discard(connection)

    def refresh(self) -> None:
        self.stats.gauges["upstream_cx_active"] = len(self.connections)

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            stale = time.monotonic() - IDLE_SECONDS
            for connection in [c for c in self.connections if c.idle and c.last_active < stale]:
                connection.end()

    async def close(self, grace: float) -> None:
        for server in self._servers:
            server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in list(self.connections):
            connection.end()
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
