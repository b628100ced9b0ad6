"""Debian's nginx as a pod's data plane, driven by the pod's Python process (the control plane).

Shared by the load balancers (``sdc/nginx_lb.py``) and the proxy (``sdc/nginx_proxy.py``):

* rendering: the ``http`` preamble (temporary paths, keep-alive, the trace-context ``map``s, the
  JSON log formats), the forwarding headers a hop sets, ``upstream`` blocks and the
  ``stub_status`` server; each service renders the rest (its ``server`` and ``location``s);
* the process (``NginxProcess``): started in the pod's namespace on ``bind``, each new
  configuration tested with ``nginx -t`` and applied by a reload (the new worker takes new
  connections while the old one finishes the requests in flight, so none is dropped), stopped
  gracefully (SIGQUIT) on ``close``;
* the access log: nginx writes one JSON line per request into a FIFO the pod reads (at most
  every ``DRAIN_INTERVAL``); from each line come the pod's access-log entry, its Envoy-named
  statistics and, when sampled, its SERVER and CLIENT spans (``NginxService.account``);
* names: upstream ``host:port`` entries resolve through the pod registry; every
  ``REGISTRY_SECONDS`` the pod re-renders when an upstream's pod stopped, came back or moved.

Trace context is read by ``map``s from ``traceparent`` (else B3 ``x-b3-*``); nginx's
``$request_id`` (128 random bits) gives the SERVER span id (first 64 bits), the CLIENT span id
sent downstream (last 64 bits), the id of a second CLIENT span (the IDS copy's: the middle 64
bits) and the trace id of a request that came without one; a request without context is sampled
by ``split_clients`` at CLOVER_SDC_TRACE_RATIO.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson
import psutil
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags

from sdc import topology
from sdc.accesslog import UNKNOWN, AccessEntry, timestamp
from sdc.forward import SENDER_POD, SENDER_SERVICE
from sdc.metrics import ClusterStats
from sdc.names import ResolveError
from sdc.nginx_control import HttpService
from sdc.runtime import ConfigRefused, Runtime
from sdc.tracing import finish, http_tags, operation_name, random_id

log = logging.getLogger(__name__)

F_SETPIPE_SZ = 1031
PR_SET_PDEATHSIG = 1
PIPE_SIZE = 1024 * 1024
START_SECONDS = 10.0
REGISTRY_SECONDS = 2.0
DRAIN_INTERVAL = 0.02  # the access log FIFO is read at most this often
TRACEPARENT = "~^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$"

LOG_FIELDS = {
    "msec": "$msec", "rt": "$request_time", "status": "$status", "bytes": "$body_bytes_sent",
    "clen": "$content_length", "method": "$request_method", "host": "$http_host", "uri": "$request_uri",
    "ua": "$http_user_agent", "addr": "$remote_addr", "port": "$remote_port", "rid": "$clover_request_id",
    "trace": "$clover_trace_id", "parent": "$clover_parent_id", "server": "$clover_server_span",
    "client": "$clover_client_span", "sampled": "$clover_sampled", "up": "$upstream_addr",
    "up_status": "$upstream_status", "up_time": "$upstream_response_time", "up_rx": "$upstream_bytes_received",
    "up_tx": "$upstream_bytes_sent", "creq": "$connection_requests",
}  # fmt: skip

# One attempt nginx made to an upstream: (upstream, status, seconds, bytes received, bytes sent).
Attempt = tuple["Upstream | None", int, float, int, int]
ConfigT = TypeVar("ConfigT")


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise RuntimeError("nginx is not installed (make setup installs Debian's nginx-light); "
                           "or run the pods with CLOVER_SDC_DATAPLANE=python")  # fmt: skip
    return found


@dataclass(frozen=True)
class Upstream:
    """One upstream address, with the names its spans and stats use."""

    label: str
    ip: str
    port: int
    service: str
    fqdn: str
    stats: ClusterStats

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


def sampling_rule(ratio: float) -> str:
    """``split_clients`` entries choosing ``01`` (sampled) for ``ratio`` of the requests."""
    if ratio >= 1:
        return '* "01";'
    if ratio <= 0:
        return '* "00";'
    return f'{ratio * 100:.2f}% "01"; * "00";'


def log_format(name: str, **extra: str) -> str:
    fields = ",".join(f'"{k}":"{v}"' for k, v in {**LOG_FIELDS, **extra}.items())
    return f"    log_format {name} escape=json '{{{fields}}}';\n"


def preamble(pod: str, home: Path, ratio: float, log_formats: str) -> str:
    """The configuration up to and including the ``http`` block's shared settings and maps."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
daemon off;
pid {home}/nginx.pid;
error_log {home}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {home}/tmp/body;
    proxy_temp_path {home}/tmp/proxy;
    fastcgi_temp_path {home}/tmp/fastcgi;
    uwsgi_temp_path {home}/tmp/uwsgi;
    scgi_temp_path {home}/tmp/scgi;
    server_tokens off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_max_body_size 0;
    map $http_traceparent $w3c_trace {{ "{TRACEPARENT}" $1; default ""; }}
    map $http_traceparent $w3c_parent {{ "{TRACEPARENT}" $2; default ""; }}
    map $http_traceparent $w3c_flags {{ "{TRACEPARENT}" $3; default ""; }}
    map $w3c_trace $clover_trace_in {{ "" $http_x_b3_traceid; default $w3c_trace; }}
    map $clover_trace_in $clover_trace_id {{ "" $request_id; default $clover_trace_in; }}
    map $w3c_parent $clover_parent_id {{ "" $http_x_b3_spanid; default $w3c_parent; }}
    map $request_id $clover_server_span {{ "~^([0-9a-f]{{16}})" $1; }}
    map $request_id $clover_client_span {{ "~([0-9a-f]{{16}})$" $1; }}
    map $request_id $clover_copy_span {{ "~^[0-9a-f]{{8}}([0-9a-f]{{16}})" $1; }}
    split_clients "$request_id" $clover_root_sampled {{ {sampling_rule(ratio)} }}
    map "$w3c_flags:$http_x_b3_sampled:$clover_trace_in" $clover_sampled {{
        "~^[0-9a-f][13579bdf]:" "01";
        "~^[0-9a-f][02468ace]:" "00";
        "~^:1:" "01";
        "~^:0:" "00";
        "~^::$" $clover_root_sampled;
        default "01";
    }}
    map $clover_sampled $clover_b3_sampled {{ "01" "1"; default "0"; }}
    map $request_id $clover_uuid {{ "~^(.{{8}})(.{{4}})(.{{4}})(.{{4}})(.{{12}})$" "$1-$2-$3-$4-$5"; }}
    map $http_x_request_id $clover_request_id {{ "" $clover_uuid; default $http_x_request_id; }}
    map $http_x_real_ip $clover_real_ip {{ "" $remote_addr; default $http_x_real_ip; }}
    map $upstream_http_via $clover_via {{ "" "1.1 {pod}"; default "$upstream_http_via, 1.1 {pod}"; }}
{log_formats}"""


def trace_headers(span: str) -> str:
    """``proxy_set_header`` lines sending the request's trace context with ``span`` (an nginx
    variable) as the parent of the next hop's SERVER span; the client's own are replaced."""
    return f"""            proxy_set_header traceparent "00-$clover_trace_id-{span}-$clover_sampled";
            proxy_set_header tracestate "";
            proxy_set_header b3 "";
            proxy_set_header X-B3-TraceId $clover_trace_id;
            proxy_set_header X-B3-SpanId {span};
            proxy_set_header X-B3-ParentSpanId "";
            proxy_set_header X-B3-Sampled $clover_b3_sampled;
            proxy_set_header X-B3-Flags "";
"""


def forwarding(service: str, pod: str, ip: str, real_ip: str, host: str | None = None) -> str:
    """The directives of a ``location`` relaying to an upstream as this chain's hops do
    (``sdc.forward.forwarded_headers``): ``real_ip`` is ``$remote_addr`` on the first hop, else
    ``$clover_real_ip`` (kept from the previous hop); ``host`` replaces nginx's ``$proxy_host``."""
    host_line = f'            proxy_set_header Host "{host}";\n' if host else ""
    return f"""            proxy_bind {ip};
            proxy_http_version 1.1;
{host_line}            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP {real_ip};
            proxy_set_header X-Forwarded-Proto http;
            proxy_set_header X-Request-Id $clover_request_id;
            proxy_set_header {SENDER_SERVICE} "{service}";
            proxy_set_header {SENDER_POD} "{pod}";
{trace_headers("$clover_client_span")}            proxy_hide_header Via;
            proxy_hide_header traceresponse;
            proxy_connect_timeout 1s;
"""


def upstream_block(
    name: str, upstreams: list[Upstream], fail_timeout: str = "10s", extra: str = "", idle: str = "60s", kept: int = 64
) -> str:
    """An ``upstream`` of ``upstreams`` (plus ``extra`` servers), up to ``kept`` keep-alive
    connections kept ``idle`` when unused."""
    servers = "".join(f"        server {u.ip}:{u.port} max_fails=1 fail_timeout={fail_timeout};\n" for u in upstreams)
    return f"""    upstream {name} {{
{servers}{extra}        keepalive {kept};
        keepalive_requests 1000000;
        keepalive_timeout {idle};
    }}
"""


def socket_dir(home: Path) -> Path:
    """Where the nginx of ``home`` keeps its unix sockets: a short path (a socket's path has at
    most 107 bytes), private to the pod."""
    return Path(tempfile.gettempdir()) / f"clover-nginx-{hashlib.sha1(str(home).encode()).hexdigest()[:12]}"


def status_words(home: Path) -> list[bytes]:
    """The words of the ``stub_status`` page of the nginx of ``home`` (``status_server``)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        sock.connect(str(socket_dir(home) / "status.sock"))
        sock.sendall(b"GET / HTTP/1.0\r\nHost: status\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer.split(b"\r\n\r\n", 1)[-1].split()


def status_server(home: Path) -> str:
    return f"""    server {{
        listen unix:{socket_dir(home)}/status.sock;
        access_log off;
        location / {{ stub_status; }}
    }}
"""


def as_seconds(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


def log_entry(line: bytes) -> dict[str, str]:
    """One line of nginx's JSON log. nginx copies a header's bytes as they came: a line with bytes
    that are not UTF-8 is read with those replaced (U+FFFD) rather than lost."""
    try:
        entry: dict[str, str] = orjson.loads(line)
    except orjson.JSONDecodeError:
        entry = json.loads(line.decode("utf-8", "replace"))
    return entry


def as_int(value: str) -> int:
    """A count nginx logged; 0 for its "-" or an empty value (a GET's ``$content_length``)."""
    return int(value) if value.isascii() and value.isdigit() else 0


def established(pid: int) -> list[tuple[str, int, str, int]]:
    """(local ip, port, remote ip, port) of the established TCP connections in ``pid``'s namespace."""
    found = []
    with contextlib.suppress(OSError), open(f"/proc/{pid}/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[3] != "01":
                continue
            (lip, lport), (rip, rport) = (p.split(":") for p in parts[1:3])
            found.append((_ip(lip), int(lport, 16), _ip(rip), int(rport, 16)))
    return found


def unix_connections(pid: int, path: Path) -> int:
    """How many connections the unix socket listening at ``path`` in ``pid``'s namespace has
    accepted and not yet closed (the listener itself is not counted)."""
    listening = "00010000"  # __SO_ACCEPTCON
    suffix = f" {path}"
    with contextlib.suppress(OSError), open(f"/proc/{pid}/net/unix") as f:
        return sum(1 for line in f if line.rstrip().endswith(suffix) and line.split()[3] != listening)
    return 0


def _serving(pid: int) -> bool:
    """Whether an nginx worker still takes requests on its idle keep-alive connections: once
    told to stop it closes them and only finishes the requests in flight."""
    try:
        return "shutting down" not in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False


def _end_with_parent() -> None:
    """In the child before exec: nginx gets SIGTERM if the pod process dies without stopping it."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _ip(little_endian_hex: str) -> str:
    return socket.inet_ntoa(int(little_endian_hex, 16).to_bytes(4, "little"))


class NginxProcess:
    """The nginx process answering the pod's HTTP: started on ``bind``, reloaded on a change,
    stopped gracefully (SIGQUIT: requests in flight finish) on ``close``."""

    def __init__(self, service: NginxService[ConfigT]):
        self.service = service
        self.runtime = service.runtime
        self.home = self.runtime.cfg.state_dir / self.runtime.name / "nginx"
        self.conf = self.home / "nginx.conf"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._fifo: int | None = None
        self._resume: asyncio.TimerHandle | None = None
        self._pending = b""

    # -- the access log FIFO ---------------------------------------------------------------

    def _open_fifo(self) -> None:
        fifo = self.home / "access.fifo"
        with contextlib.suppress(FileNotFoundError):
            fifo.unlink()
        os.mkfifo(fifo, 0o600)
        self._fifo = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # a larger pipe: nginx never waits for the reader
            fcntl.fcntl(self._fifo, F_SETPIPE_SZ, PIPE_SIZE)
        self._listen()

    def _listen(self) -> None:
        assert self._fifo is not None  # close() cancels a pending _listen before closing the FIFO
        self._resume = None
        asyncio.get_running_loop().add_reader(self._fifo, self._woken)

    def _woken(self) -> None:
        """Read what nginx wrote, then stop listening for ``DRAIN_INTERVAL``: under load the pod
        wakes once per interval for all the lines written meanwhile, not once per request."""
        assert self._fifo is not None
        self.drain()
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._fifo)
        self._resume = loop.call_later(DRAIN_INTERVAL, self._listen)

    def drain(self) -> None:
        """Read and account every complete line nginx wrote so far. The time it is read bounds the
        request's end within nginx's ``$msec`` (millisecond resolution): read at once (a quiet pod),
        it orders the hops' entries within that millisecond; read later, it is ``$msec``'s end."""
        if self._fifo is None:
            return
        while True:
            try:
                chunk = os.read(self._fifo, 256 * 1024)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._pending += chunk
        now = time.time()
        lines = self._pending.split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            if line:
                try:
                    self.service.account(log_entry(line), now)
                except (ValueError, KeyError) as exc:
                    log.warning("unreadable nginx log line %r: %s", line[:200], exc)

    # -- the process -------------------------------------------------------------------------

    def check(self, text: str) -> Path:
        """The configuration in a new file, checked with ``nginx -t``; raises ConfigRefused."""
        candidate = self.home / "nginx.conf.new"
        candidate.write_text(f"# {self.runtime.name}: rendered by the pod from its configuration\n{text}")
        test = subprocess.run(self._argv("-t", "-q", "-c", str(candidate)), capture_output=True, text=True, timeout=20)
        if test.returncode != 0:
            raise ConfigRefused(f"nginx -t refused the configuration: {test.stderr.strip()}")
        return candidate

    async def bind(self, port: int) -> None:
        for sub in ("tmp", "tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        shutil.rmtree(socket_dir(self.home), ignore_errors=True)  # a killed pod's
        socket_dir(self.home).mkdir(mode=0o700)
        self._open_fifo()
        os.replace(self.check(await self.service.first_render(port)), self.conf)
        self.process = subprocess.Popen(self._argv("-c", str(self.conf)), stdin=subprocess.DEVNULL,
                                        start_new_session=True, preexec_fn=_end_with_parent)  # fmt: skip
        deadline = time.monotonic() + START_SECONDS
        while not self._workers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise OSError(f"nginx did not start; see {self.home / 'error.log'}: {self._last_error()}")
            await asyncio.sleep(0.05)
        self.port = port

    def _argv(self, *args: str) -> list[str]:
        """nginx with ``args``, in the pod's namespace (``nginx -t`` binds the listen address too)."""
        argv = [nginx_binary(), "-e", str(self.home / "error.log"), *args]
        return ["ip", "netns", "exec", self.runtime.netns, *argv] if self.runtime.netns else argv

    def _workers(self) -> set[int]:
        if self.process is None:
            return set()
        try:
            return {c.pid for c in psutil.Process(self.process.pid).children()}
        except psutil.Error:
            return set()

    def _last_error(self) -> str:
        with contextlib.suppress(OSError):
            return (self.home / "error.log").read_text().strip().splitlines()[-1]
        return ""

    async def apply(self, candidate: Path) -> None:
        """Switch to a checked configuration: reload, and wait for the new worker and for the
        old one to stop taking requests (from then on every request gets the new configuration)."""
        assert self.process is not None
        old = self._workers()
        os.replace(candidate, self.conf)
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + START_SECONDS
        while not (self._workers() - old) or any(_serving(pid) for pid in old):
            if time.monotonic() > deadline:
                raise ConfigRefused(f"nginx did not reload: {self._last_error()}")
            await asyncio.sleep(0.02)

    def stub_status(self) -> dict[str, int]:
        """nginx's connection counts (Active, Reading, Writing, Waiting), the asking one left out."""
        words = status_words(self.home)
        active = int(words[words.index(b"connections:") + 1])
        values = {w.decode().rstrip(":"): int(words[i + 1]) for i, w in enumerate(words) if w.endswith(b":")
                  and w[:-1] in (b"Reading", b"Writing", b"Waiting")}  # fmt: skip
        return {"active": active - 1, "writing": values["Writing"] - 1, "waiting": values["Waiting"]}

    async def close(self, grace: float) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            deadline = time.monotonic() + grace + 2
            while self.process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(5)
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if self._fifo is not None:
            self.drain()
            asyncio.get_running_loop().remove_reader(self._fifo)
            os.close(self._fifo)
            self._fifo = None
        shutil.rmtree(socket_dir(self.home), ignore_errors=True)


class NginxService(HttpService, Generic[ConfigT]):
    """A pod whose HTTP nginx answers. A subclass keeps its configuration in ``config`` and says
    which ``host:port`` groups it forwards to (``groups``) and how it renders (``render``)."""

    listener: NginxProcess
    config: ConfigT

    def __init__(self, runtime: Runtime):
        super().__init__(runtime)
        assert runtime.telemetry.records_all, "the runtime of an nginx pod records the spans nginx sampled"
        self.inbound_stats = runtime.inbound(topology.HTTP_PORT)
        self.upstreams: dict[str, Upstream] = {}
        self.listener = NginxProcess(self)
        self._open_upstream: set[tuple[int, str, int]] = set()
        self._registered: set[str] = set()
        self._seen: set[str] = set()  # addresses the registry has listed
        self._follow: asyncio.Task[None] | None = None
        self.registry_looks = 0
        runtime.refreshers.append(self._refresh)
        runtime.stats_extra = self.upstream_status

    # -- what a subclass says ----------------------------------------------------------------

    def groups(self, config: ConfigT) -> list[tuple[list[str], bool]]:
        """The upstream groups of ``config``: (``host:port`` entries, whether an entry whose pod
        stopped keeps its last address rather than being left out)."""
        raise NotImplementedError

    def render(self, config: ConfigT, resolved: list[list[Upstream]]) -> str:
        raise NotImplementedError

    def with_port(self, config: ConfigT, port: int) -> ConfigT:
        raise NotImplementedError

    def account(self, entry: dict[str, str], read_at: float) -> None:
        raise NotImplementedError

    # -- names ---------------------------------------------------------------------------------

    async def resolve(self, entries: list[str], keep_gone: bool = False) -> list[Upstream]:
        """The addresses of ``entries`` now: names resolve through the pod registry, like the
        Python relay's. A name not registered yet (pods start together) keeps the address the
        chain gives that pod, or the address it had; once registered, a name that is no longer
        (its pod stopped) is left out, until it comes back, unless ``keep_gone``."""
        found = []
        for item in entries:
            host, _, port_text = item.rpartition(":")
            port = int(port_text)
            try:
                ips, service = await self.runtime.resolver.resolve_async(host)
                self._registered.add(host)
                self._seen.update(ips)
                # A service's pods not registered yet (pods start together) count at their chain address.
                ips = ips + [ip for ip in self._members(host) if ip not in ips and ip not in self._seen]
            except ResolveError:
                if host in self._registered and not keep_gone:
                    continue
                ips, service = self._known(host, port)
                if not ips:
                    raise
            stats = self.runtime.outbound(port, service)
            fqdn = service if service in ips else f"{service}.{topology.NAMESPACE}.{topology.CLUSTER_DOMAIN}"
            found += [Upstream(item, ip, port, service, fqdn, stats) for ip in ips]
        return found

    def _known(self, host: str, port: int) -> tuple[list[str], str]:
        """Addresses for ``host`` without the registry: those in use, else the chain's own (a
        service's: each of its pods')."""
        used = [u for u in self.upstreams.values() if u.label == f"{host}:{port}"]
        if used:
            return [u.ip for u in used], used[0].service
        name, cfg = host.split(".")[0], self.runtime.cfg
        if name in topology.POD_NAMES and topology.mode(cfg) != topology.CLUSTER:
            return [topology.pod_ip(cfg, name)], topology.spec(name).service
        return self._members(host), name

    def _members(self, host: str) -> list[str]:
        """The chain's addresses of the pods of service ``host`` (http-lb: both load balancers)."""
        name, cfg = host.split(".")[0], self.runtime.cfg
        if name in topology.POD_NAMES or topology.mode(cfg) == topology.CLUSTER:
            return []
        return [topology.pod_ip(cfg, p.name) for p in topology.POD_SPECS if p.service == name]

    async def resolve_groups(self, config: ConfigT) -> list[list[Upstream]]:
        return [await self.resolve(entries, keep) for entries, keep in self.groups(config)]

    async def first_render(self, port: int) -> str:
        self.config = self.with_port(self.config, port)
        resolved = await self.resolve_groups(self.config)
        self._use(resolved)
        return self.render(self.config, resolved)

    def _use(self, resolved: list[list[Upstream]]) -> None:
        self.upstreams = {u.address: u for group in resolved for u in group}

    async def switch(self, config: ConfigT, resolved: list[list[Upstream]] | None = None) -> None:
        """Apply ``config`` (its groups resolved now unless given); raises ConfigRefused."""
        resolved = await self.resolve_groups(config) if resolved is None else resolved
        await self.listener.apply(self.listener.check(self.render(config, resolved)))
        self.config = config
        self._use(resolved)

    async def follow_registry(self) -> None:
        """Every ``REGISTRY_SECONDS``, look at the registry (counted in ``registry_looks``)."""
        while True:
            await asyncio.sleep(REGISTRY_SECONDS)
            await self._look_at_registry()
            self.registry_looks += 1

    async def _look_at_registry(self) -> None:
        """Re-render when an upstream's address changes or its pod stops or comes back."""
        config = self.config
        try:
            wanted = await self.resolve_groups(config)  # outside the lock: a lookup may take a while
        except ResolveError:
            return
        async with self.lock:
            unchanged = {u.address for group in wanted for u in group} == set(self.upstreams)
            if config is not self.config or not all(wanted) or unchanged:
                return
            try:
                await self.switch(self.config, wanted)
            except ConfigRefused as exc:
                log.warning("cannot follow the registry: %s", exc)
                return
            log.info("upstreams now %s", ", ".join(f"{u.label} ({u.ip})" for group in wanted for u in group))

    def upstream_status(self) -> dict[str, Any]:
        """What the pod's /stats adds: the addresses nginx forwards to now, by ``host:port`` entry,
        and how many registry looks are done (the second look after a pod came back has taken it
        back in: the first may have read the registry, or a cached answer, before it did)."""
        addresses: dict[str, list[str]] = {}
        for upstream in self.upstreams.values():
            addresses.setdefault(upstream.label, []).append(upstream.address)
        return {"upstreams": {label: sorted(found) for label, found in addresses.items()},
                "registry_looks": self.registry_looks}  # fmt: skip

    async def start(self) -> None:
        self._follow = asyncio.create_task(self.follow_registry())

    async def stop(self) -> None:
        if self._follow is not None:
            self._follow.cancel()

    def rebind_check(self, port: int) -> None:
        """Refuse a ``server_port`` nginx could not listen on (before anything changes)."""
        if port != self.listener.port:
            try:
                self.runtime.placement.listener(port).close()
            except OSError as exc:
                raise ConfigRefused(f"server_port {port}: cannot listen: {exc.strerror or exc}") from None

    def port_applied(self, port: int) -> None:
        if port != self.listener.port:
            self.listener.port = port
            self.runtime.port_changed("http", port)

    # -- what nginx logged -------------------------------------------------------------------

    def request_done(self, entry: dict[str, str], read_at: float) -> tuple[float, float, int, int]:
        """The inbound statistics and the access-log entry of one request nginx answered; returns
        (end, seconds taken, status, response size)."""
        end = max(float(entry["msec"]), min(read_at, float(entry["msec"]) + 0.001))
        took = as_seconds(entry["rt"])
        status = as_int(entry["status"])
        size = as_int(entry["bytes"])
        inbound = self.inbound_stats
        if entry["creq"] == "1":
            inbound.counters["upstream_cx_total"] += 1
        inbound.request_started()
        inbound.request_finished(status, took * 1000, as_int(entry["clen"]), size)
        runtime = self.runtime
        source, user = runtime.sources.get(entry["addr"], (UNKNOWN, UNKNOWN))
        runtime.access_log.write(
            AccessEntry(
                time=timestamp(end), stream=runtime.log_stream, pod=runtime.name, source=source, user=user,
                destination=runtime.spec.service, responseCode=status, responseSize=size,
                latency=round(took * 1000, 3), method=entry["method"], url=f"http://{entry['host']}{entry['uri']}",
                userAgent=entry["ua"], traceId=entry["trace"], spanId=entry["server"], requestId=entry["rid"],
            )
        )  # fmt: skip
        return end, took, status, size

    def attempts(self, entry: dict[str, str]) -> list[Attempt]:
        """Each upstream nginx tried, counted in its outbound statistics; addresses not of an
        upstream (the pod's own unix sockets) are left out."""
        if not entry["up"] or entry["up"] == "-":
            return []
        columns = [entry[k].replace(" : ", ", ").split(", ") for k in ("up", "up_status", "up_time", "up_rx", "up_tx")]
        found: list[Attempt] = [(self.upstreams.get(addr), as_int(code), as_seconds(secs), as_int(rx), as_int(tx))
                                for addr, code, secs, rx, tx in zip(*columns, strict=False)
                                if not addr.startswith("unix:")]  # fmt: skip
        for upstream, code, seconds, rx, tx in found:
            if upstream is not None:
                upstream.stats.request_started()
                upstream.stats.request_finished(code, seconds * 1000, rx, tx)
        return found

    def tags(self, entry: dict[str, str], cluster: str) -> dict[str, str | int | bool]:
        return http_tags(url=f"http://{entry['host']}{entry['uri']}", method=entry["method"], user_agent=entry["ua"],
                         request_size=as_int(entry["clen"]), upstream_cluster=cluster, request_id=entry["rid"],
                         peer=f"{entry['addr']}:{entry['port']}")  # fmt: skip

    def server_span(self, entry: dict[str, str], tags: dict[str, str | int | bool], start_ns: int) -> Span:
        """The request's SERVER span (started; the caller finishes it), child of the caller's."""
        trace_id = int(entry["trace"], 16)
        parent = None
        if entry["parent"]:
            caller = SpanContext(trace_id, int(entry["parent"], 16), True, TraceFlags(TraceFlags.SAMPLED))
            parent = NonRecordingSpan(caller)
        name = operation_name(self.runtime.spec.fqdn, self.listener.port)
        ids = (trace_id, int(entry["server"], 16))
        return self.runtime.telemetry.start(name, SpanKind.SERVER, parent, tags, start_ns, ids)

    def client_spans(
        self, entry: dict[str, str], parent: Span | Context, tags: dict[str, str | int | bool], attempts: list[Attempt],
        start_ns: int, end_ns: int, size: int, span_id: int,
    ) -> None:  # fmt: skip
        """One CLIENT span per attempt (the last has ``span_id``, the one nginx sent downstream), with
        ``tags`` and the attempt's upstream."""
        trace_id = int(entry["trace"], 16)
        client_start = start_ns
        for i, (upstream, code, seconds, _, _) in enumerate(attempts):
            last = i == len(attempts) - 1
            sid = span_id if last else random_id(64)
            name = operation_name(upstream.fqdn, upstream.port) if upstream else entry["up"]
            label = upstream.label if upstream else entry["up"]
            ctags = {**tags, "http.url": f"http://{label}{entry['uri']}",
                     "upstream_cluster": upstream.stats.cluster if upstream else "",
                     "peer.address": upstream.address if upstream else ""}  # fmt: skip
            client = self.runtime.telemetry.start(name, SpanKind.CLIENT, parent, ctags, client_start, (trace_id, sid))
            client_end = min(end_ns, client_start + int(seconds * 1e9)) if not last else end_ns
            finish(client, code or 502, size if last else 0, None if code else "no answer", end_time=client_end)
            client_start = client_end

    def _refresh(self) -> None:
        self.listener.drain()
        with contextlib.suppress(OSError, ValueError, IndexError):
            counts = self.listener.stub_status()
            self.inbound_stats.gauges["upstream_cx_active"] = counts["active"]
            self.inbound_stats.gauges["upstream_rq_active"] = counts["writing"]
        process = self.listener.process
        if process is None:
            return
        open_now: dict[str, int] = {}
        connections = set()
        for lip, lport, rip, rport in established(process.pid):
            key = f"{rip}:{rport}"
            if lip == self.runtime.ip and key in self.upstreams:
                open_now[key] = open_now.get(key, 0) + 1
                connections.add((lport, rip, rport))
        for _, rip, rport in connections - self._open_upstream:  # opened since the last look
            self.upstreams[f"{rip}:{rport}"].stats.counters["upstream_cx_total"] += 1
        self._open_upstream = connections
        gauges: dict[str, int] = {}
        for key, upstream in self.upstreams.items():  # a cluster of several addresses (http-lb) sums them
            gauges[upstream.stats.cluster] = gauges.get(upstream.stats.cluster, 0) + open_now.get(key, 0)
        for upstream in self.upstreams.values():
            upstream.stats.gauges["upstream_cx_active"] = gauges[upstream.stats.cluster]
