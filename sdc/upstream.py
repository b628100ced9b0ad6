"""HTTP/1.1 to upstream pods over keep-alive connections, with Envoy-style accounting.

One ``Pool`` per upstream address keeps idle connections for reuse. Sockets are made by the
pod's ``Placement`` (inside its network namespace when it has one). A request that fails on a
reused connection before any byte of the answer arrived is retried once on a new connection
(the upstream may have closed it while idle), as nginx and Envoy do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import AsyncIterable
from dataclasses import dataclass

from sdc.metrics import ClusterStats
from sdc.netns import Placement

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024

# Not forwarded: RFC 9110 §7.6.1 connection-specific fields, plus Expect (bodies are relayed
# by the proxy itself) and Host (set for the upstream).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
        "host",
        "content-length",
    }
)


class UpstreamError(Exception):
    """The upstream gave no usable answer."""

    status = 502


class ConnectFailed(UpstreamError):
    """No connection could be made: safe to try another upstream."""


class UpstreamTimeout(UpstreamError):
    status = 504


class _Retryable(Exception):
    pass


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    tx_bytes: int = 0
    rx_bytes: int = 0

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: ClusterStats):
        self.reader = reader
        self.writer = writer
        self.stats = stats
        self.last_used = time.monotonic()
        self.closed = False
        stats.connection_opened()

    def usable(self, idle_timeout: float) -> bool:
        return (
            not self.closed
            and not self.writer.is_closing()
            and not self.reader.at_eof()
            and time.monotonic() - self.last_used < idle_timeout
        )

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()
            self.stats.connection_closed()


def encode_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Pool:
    """Keep-alive connections to one upstream address."""

    def __init__(
        self,
        ip: str,
        port: int,
        placement: Placement,
        stats: ClusterStats,
        connect_timeout: float = 2.0,
        idle_timeout: float = 50.0,
        max_idle: int = 256,
    ):
        self.ip = ip
        self.port = port
        self.placement = placement
        self.stats = stats
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self.retired = False
        self._idle: deque[_Conn] = deque()

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            sock = self.placement.tcp_socket()
        except OSError as exc:
            self.stats.counters["upstream_cx_connect_fail"] += 1
            raise ConnectFailed(f"cannot make a socket for {self.ip}:{self.port}: {exc}") from None
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (self.ip, self.port)), self.connect_timeout)
            reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_HEAD)
        except (OSError, TimeoutError) as exc:
            sock.close()
            self.stats.counters["upstream_cx_connect_fail"] += 1
            reason = "timed out" if isinstance(exc, TimeoutError) else os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConnectFailed(f"connect to {self.ip}:{self.port} failed: {reason}") from None
        return _Conn(reader, writer, self.stats)

    async def open(self) -> _Conn:
        """A new connection of this pool's own (the caller closes it)."""
        return await self._connect()

    async def _acquire(self) -> tuple[_Conn, bool]:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable(self.idle_timeout):
                return conn, True
            conn.close()
        return await self._connect(), False

    def _release(self, conn: _Conn, keep_alive: bool) -> None:
        if keep_alive and not self.retired and len(self._idle) < self.max_idle and not conn.writer.is_closing():
            conn.last_used = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    def retire(self) -> None:
        """Stop reusing connections: idle ones close now, busy ones when their request ends."""
        self.retired = True
        while self._idle:
            self._idle.pop().close()

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] = b"",
        timeout: float = 60.0,
    ) -> Response:
        """Send one request and read the whole answer.

        ``headers`` must not carry framing fields; Content-Length (bytes body) or chunked
        transfer coding (streamed body) is added here."""
        attempts = 2 if isinstance(body, bytes) else 1
        for attempt in range(attempts):
            conn, reused = await self._acquire()
            try:
                async with asyncio.timeout(timeout):  # no extra task, unlike wait_for on 3.11
                    return await self._exchange(conn, method, target, headers, body)
            except _Retryable as exc:
                conn.close()
                if reused and attempt + 1 < attempts:
                    continue
                raise UpstreamError(f"{self.ip}:{self.port} closed the connection: {exc}") from None
            except TimeoutError:
                conn.close()
                self.stats.counters["upstream_rq_timeout"] += 1
                raise UpstreamTimeout(f"{self.ip}:{self.port} did not answer within {timeout:.0f}s") from None
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    async def _exchange(
        self, conn: _Conn, method: str, target: str, headers: list[tuple[str, str]], body: bytes | AsyncIterable[bytes]
    ) -> Response:
        writer = conn.writer
        streamed = not isinstance(body, bytes)
        framing = [("Transfer-Encoding", "chunked")] if streamed else []
        if isinstance(body, bytes) and (body or method in ("POST", "PUT", "PATCH")):
            framing = [("Content-Length", str(len(body)))]
        head = encode_head(method, target, [*headers, *framing])
        tx = len(head)
        try:
            writer.write(head)
            if isinstance(body, bytes):
                if body:
                    writer.write(body)
                    tx += len(body)
                await writer.drain()
            else:
                async for chunk in body:
                    if chunk:
                        writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                        tx += len(chunk)
                        await writer.drain()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, OSError) as exc:
            raise _Retryable(str(exc)) from None
        response, keep_alive = await self.read_response(conn.reader, method)
        response.tx_bytes = tx
        self._release(conn, keep_alive)
        return response

    async def read_response(self, reader: asyncio.StreamReader, method: str) -> tuple[Response, bool]:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    raise _Retryable("no answer") from None
                raise UpstreamError("the answer's head was cut short") from None
            except asyncio.LimitOverrunError:
                raise UpstreamError(f"the answer's head exceeds {MAX_HEAD} bytes") from None
            except ConnectionError as exc:
                raise _Retryable(str(exc)) from None
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise UpstreamError(f"malformed status line {lines[0][:80]!r}")
            status = int(parts[1])
            if 100 <= status < 200 and status != 101:
                continue  # interim answer
            break
        version, reason = parts[0], parts[2] if len(parts) > 2 else ""
        headers: list[tuple[str, str]] = []
        length: int | None = None
        chunked = False
        connection = ""
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise UpstreamError(f"malformed header line {line[:80]!r}")
            name, value = name.strip(), value.strip()
            lname = name.lower()
            if lname == "content-length":
                if not value.isdigit():
                    raise UpstreamError(f"bad Content-Length {value!r}")
                length = int(value)
            elif lname == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif lname == "connection":
                connection = value.lower()
            headers.append((name, value))
        keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
        rx = len(head)
        try:
            if method == "HEAD" or status in (204, 304):
                body = b""
            elif chunked:
                body = await self._read_chunked(reader)
            elif length is not None:
                if length > MAX_BODY:
                    raise UpstreamError(f"the answer's body ({length} bytes) exceeds {MAX_BODY} bytes")
                body = await reader.readexactly(length)
            else:
                body = await reader.read(MAX_BODY + 1)
                keep_alive = False
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise UpstreamError(f"the answer's body was cut short: {exc}") from None
        rx += len(body)
        return Response(status, reason, headers, body, rx_bytes=rx), keep_alive

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailer fields are dropped
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise UpstreamError(f"the answer's body exceeds {MAX_BODY} bytes")
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def close(self) -> None:
        self.retire()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)
