"""http-lb with Debian's nginx as its data plane (CLOVER_SDC_DATAPLANE=nginx), as the original ran it.

The pod's Python process stays the control plane: ModifyLB is checked as for the Python load
balancer, then rendered into an nginx configuration (``upstream`` of the servers' addresses,
round-robin, ``max_fails=1 fail_timeout=10s``, keep-alive), tested with ``nginx -t`` and
applied with a reload: nginx's new worker takes new connections while the old one finishes the
requests in flight, so none is dropped.

nginx writes one JSON line per request (``log_format escape=json``) into a FIFO the pod reads:
from each line come the pod's access-log entry, its Envoy-named cluster statistics (inbound and
one outbound cluster per server) and, when the request is sampled, its SERVER and CLIENT spans.
Trace context is read by nginx ``map``s from ``traceparent`` (else B3 ``x-b3-*``); nginx's
``$request_id`` (128 random bits) gives the SERVER span id (first half) and the CLIENT span id
(second half) it sends downstream, and the trace id of a request that came without one; a
request without context is sampled by ``split_clients`` at CLOVER_SDC_TRACE_RATIO. Gauges come
from nginx's ``stub_status`` (on a unix socket) and the worker's TCP table.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from protos import nginx_pb2
from sdc import topology
from sdc.accesslog import UNKNOWN, AccessEntry, timestamp
from sdc.forward import SENDER_POD, SENDER_SERVICE
from sdc.lb import LbConfig, checked_config, config_dump
from sdc.metrics import ClusterStats
from sdc.names import ResolveError
from sdc.nginx_control import MODIFIED, HttpService
from sdc.runtime import ConfigRefused, Runtime
from sdc.tracing import finish, http_tags, operation_name

log = logging.getLogger(__name__)

F_SETPIPE_SZ = 1031
PR_SET_PDEATHSIG = 1
PIPE_SIZE = 1024 * 1024
START_SECONDS = 10.0
REGISTRY_SECONDS = 2.0
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


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise RuntimeError("nginx is not installed (make setup installs Debian's nginx-light); "
                           "or run the load balancers with CLOVER_SDC_DATAPLANE=python")  # fmt: skip
    return found


@dataclass(frozen=True)
class Upstream:
    """One server address of the list, with the names its spans and stats use."""

    label: str
    ip: str
    port: int
    service: str
    fqdn: str
    stats: ClusterStats


def sampling_rule(ratio: float) -> str:
    """``split_clients`` entries choosing ``01`` (sampled) for ``ratio`` of the requests."""
    if ratio >= 1:
        return '* "01";'
    if ratio <= 0:
        return '* "00";'
    return f'{ratio * 100:.2f}% "01"; * "00";'


def render(
    pod: str, service: str, home: Path, ip: str, config: LbConfig, upstreams: list[Upstream], ratio: float
) -> str:
    """The nginx configuration of a load balancer pod ``pod`` of ``service``."""
    servers = "\n".join(f"        server {u.ip}:{u.port} max_fails=1 fail_timeout=10s;" for u in upstreams)
    fields = ",".join(f'"{k}":"{v}"' for k, v in LOG_FIELDS.items())
    user = "user root;\n" if os.geteuid() == 0 else ""
    other = "" if config.lb_path == "/" else '        location / { return 404 "no location matches $uri\\n"; }\n'
    return f"""# {pod}: rendered by sdc/nginx_lb.py from the pod's configuration (ModifyLB)
{user}worker_processes 1;
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
    map $http_x_request_id $clover_request_id {{ "" $request_id; default $http_x_request_id; }}
    map $http_x_real_ip $clover_real_ip {{ "" $remote_addr; default $http_x_real_ip; }}
    map $upstream_http_via $clover_via {{ "" "1.1 {pod}"; default "$upstream_http_via, 1.1 {pod}"; }}
    log_format clover escape=json '{{{fields}}}';
    upstream {config.slb_group} {{
{servers}
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }}
    server {{
        listen {ip}:{config.server_port} backlog=1024;
        server_name {config.server_name};
        access_log {home}/access.fifo clover;
        add_header traceresponse "00-$clover_trace_id-$clover_server_span-$clover_sampled" always;
        add_header Via $clover_via always;
        location {config.lb_path} {{
            proxy_pass http://{config.slb_group};
            proxy_bind {ip};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $clover_real_ip;
            proxy_set_header X-Forwarded-Proto http;
            proxy_set_header X-Request-Id $clover_request_id;
            proxy_set_header {SENDER_SERVICE} "{service}";
            proxy_set_header {SENDER_POD} "{pod}";
            proxy_set_header traceparent "00-$clover_trace_id-$clover_client_span-$clover_sampled";
            proxy_set_header tracestate "";
            proxy_set_header b3 "";
            proxy_set_header X-B3-TraceId $clover_trace_id;
            proxy_set_header X-B3-SpanId $clover_client_span;
            proxy_set_header X-B3-ParentSpanId "";
            proxy_set_header X-B3-Sampled $clover_b3_sampled;
            proxy_set_header X-B3-Flags "";
            proxy_hide_header Via;
            proxy_hide_header traceresponse;
            proxy_connect_timeout 1s;
        }}
{other}    }}
    server {{
        listen unix:{home}/status.sock;
        access_log off;
        location / {{ stub_status; }}
    }}
}}
"""


def _seconds(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


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


class NginxListener:
    """The nginx process answering the pod's HTTP: started on ``bind``, reloaded on a change,
    stopped gracefully (SIGQUIT: requests in flight finish) on ``close``."""

    def __init__(self, lb: NginxLoadBalancer):
        self.lb = lb
        self.runtime = lb.runtime
        self.home = self.runtime.cfg.state_dir / self.runtime.name / "nginx"
        self.conf = self.home / "nginx.conf"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._fifo: int | None = None
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
        asyncio.get_running_loop().add_reader(self._fifo, self.drain)

    def drain(self) -> None:
        """Read and account every complete line nginx wrote so far. The pod reads as soon as
        nginx writes (just after the answer went out) and takes that time as the request's end:
        nginx's ``$msec`` has only millisecond resolution, too coarse to order the hops' entries."""
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
                    self.lb.account(json.loads(line), now)
                except (ValueError, KeyError) as exc:
                    log.warning("unreadable nginx log line %r: %s", line[:200], exc)

    # -- the process -------------------------------------------------------------------------

    def write_config(self, config: LbConfig, upstreams: list[Upstream]) -> Path:
        """The configuration in a new file, checked with ``nginx -t``; raises ConfigRefused."""
        text = render(self.runtime.name, self.runtime.spec.service, self.home, self.runtime.ip, config, upstreams,
                      self.runtime.cfg.sdc_trace_ratio)  # fmt: skip
        candidate = self.home / "nginx.conf.new"
        candidate.write_text(text)
        test = subprocess.run(self._argv("-t", "-q", "-c", str(candidate)), capture_output=True, text=True, timeout=20)
        if test.returncode != 0:
            raise ConfigRefused(f"nginx -t refused the configuration: {test.stderr.strip()}")
        return candidate

    async def bind(self, port: int) -> None:
        for sub in ("tmp", "tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        self._open_fifo()
        config = dataclasses.replace(self.lb.config, server_port=port)
        upstreams = await self.lb.resolve(config.slb_list)
        os.replace(self.write_config(config, upstreams), self.conf)
        self.lb.upstreams = {f"{u.ip}:{u.port}": u for u in upstreams}
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
        old one to stop taking requests (from then on every request gets the new list)."""
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
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(self.home / "status.sock"))
            sock.sendall(b"GET / HTTP/1.0\r\nHost: status\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        words = answer.split(b"\r\n\r\n", 1)[-1].split()
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
        if self._fifo is not None:
            self.drain()
            asyncio.get_running_loop().remove_reader(self._fifo)
            os.close(self._fifo)
            self._fifo = None


class NginxLoadBalancer(HttpService):
    kind = "lb"
    listener: NginxListener

    def __init__(self, runtime: Runtime):
        super().__init__(runtime)
        assert runtime.given_ids is not None, "the runtime of an nginx pod takes the span ids nginx made"
        self.ids = runtime.given_ids
        self.config = LbConfig()
        self.inbound_stats = runtime.inbound(topology.HTTP_PORT)
        self.upstreams: dict[str, Upstream] = {}
        self.listener = NginxListener(self)
        self._open_upstream: set[tuple[int, str, int]] = set()
        self._registered: set[str] = set()
        self._follow: asyncio.Task[None] | None = None
        runtime.refreshers.append(self._refresh)

    async def resolve(self, slb_list: list[str]) -> list[Upstream]:
        """The servers' addresses now: names resolve through the pod registry, like the Python
        load balancer's. A name not registered yet (pods start together) keeps the address
        the chain gives that pod, or the address it had; once registered, a name that is no
        longer (its pod stopped) is left out, until it comes back."""
        found = []
        for item in slb_list:
            host, _, port_text = item.rpartition(":")
            port = int(port_text)
            try:
                ips, service = await self.runtime.resolver.resolve_async(host)
                self._registered.add(host)
            except ResolveError:
                if host in self._registered:
                    continue
                ips, service = self._known(host, port)
                if not ips:
                    raise
            stats = self.runtime.outbound(port, service)
            fqdn = service if service in ips else f"{service}.{topology.NAMESPACE}.{topology.CLUSTER_DOMAIN}"
            found += [Upstream(item, ip, port, service, fqdn, stats) for ip in ips]
        return found

    def _known(self, host: str, port: int) -> tuple[list[str], str]:
        """Addresses for ``host`` without the registry: those in use, else the chain's own."""
        used = [u for u in self.upstreams.values() if u.label == f"{host}:{port}"]
        if used:
            return [u.ip for u in used], used[0].service
        name = host.split(".")[0]
        if name in topology.POD_NAMES and topology.mode(self.runtime.cfg) != topology.CLUSTER:
            return [topology.pod_ip(self.runtime.cfg, name)], topology.spec(name).service
        return [], ""

    async def follow_registry(self) -> None:
        """Re-render when a server's address changes or its pod stops or comes back."""
        while True:
            await asyncio.sleep(REGISTRY_SECONDS)
            config = self.config
            try:
                wanted = await self.resolve(config.slb_list)  # outside the lock: a lookup may take a while
            except ResolveError:
                continue
            async with self.lock:
                unchanged = {f"{u.ip}:{u.port}" for u in wanted} == set(self.upstreams)
                if config is not self.config or not wanted or unchanged:
                    continue
                try:
                    await self.switch(self.config, wanted)
                except ConfigRefused as exc:
                    log.warning("cannot follow the registry: %s", exc)
                    continue
                log.info("servers now %s", ", ".join(f"{u.label} ({u.ip})" for u in wanted))

    async def switch(self, config: LbConfig, upstreams: list[Upstream]) -> None:
        await self.listener.apply(self.listener.write_config(config, upstreams))
        self.upstreams = {f"{u.ip}:{u.port}": u for u in upstreams}

    async def start(self) -> None:
        self._follow = asyncio.create_task(self.follow_registry())

    async def stop(self) -> None:
        if self._follow is not None:
            self._follow.cancel()

    async def modify_lb(self, request: nginx_pb2.ConfigLB) -> str:
        config, _ = await checked_config(self.runtime, self.config, request)
        if config.server_port != self.listener.port:
            try:
                self.runtime.placement.listener(config.server_port).close()
            except OSError as exc:
                raise ConfigRefused(f"server_port {config.server_port}: cannot listen: {exc.strerror or exc}") from None
        await self.switch(config, await self.resolve(config.slb_list))
        self.config = config
        if config.server_port != self.listener.port:
            self.listener.port = config.server_port
            self.runtime.port_changed("http", config.server_port)
        return MODIFIED

    def dump(self) -> nginx_pb2.ConfigDump:
        return config_dump(self.kind, self.runtime.name, self.config)

    # -- what nginx logged -------------------------------------------------------------------

    def account(self, entry: dict[str, str], read_at: float) -> None:
        """One request nginx answered (its line read at ``read_at``): stats, spans, the access-log entry."""
        end = max(float(entry["msec"]), min(read_at, float(entry["msec"]) + 0.001))
        took = _seconds(entry["rt"])
        status = _int(entry["status"])
        size = _int(entry["bytes"])
        inbound = self.inbound_stats
        if entry["creq"] == "1":
            inbound.counters["upstream_cx_total"] += 1
        inbound.request_started()
        inbound.request_finished(status, took * 1000, _int(entry["clen"]), size)
        attempts = self._attempts(entry)
        url = f"http://{entry['host']}{entry['uri']}"
        if entry["sampled"] == "01":
            self._spans(entry, url, end, took, status, size, attempts)
        for upstream, code, seconds, rx, tx in attempts:
            if upstream is not None:
                upstream.stats.request_started()
                upstream.stats.request_finished(code, seconds * 1000, rx, tx)
        runtime = self.runtime
        source, user = runtime.sources.get(entry["addr"], (UNKNOWN, UNKNOWN))
        runtime.access_log.write(
            AccessEntry(
                time=timestamp(end), stream=runtime.log_stream, pod=runtime.name, source=source, user=user,
                destination=runtime.spec.service, responseCode=status, responseSize=size,
                latency=round(took * 1000, 3), method=entry["method"], url=url, userAgent=entry["ua"],
                traceId=entry["trace"], spanId=entry["server"], requestId=entry["rid"],
            )
        )  # fmt: skip

    def _attempts(self, entry: dict[str, str]) -> list[tuple[Upstream | None, int, float, int, int]]:
        """Each server nginx tried: (upstream, status, seconds, bytes received, bytes sent)."""
        if not entry["up"] or entry["up"] == "-":
            return []
        columns = [entry[k].replace(" : ", ", ").split(", ") for k in ("up", "up_status", "up_time", "up_rx", "up_tx")]
        return [(self.upstreams.get(addr), _int(code), _seconds(secs), _int(rx), _int(tx))
                for addr, code, secs, rx, tx in zip(*columns, strict=False)]  # fmt: skip

    def _spans(
        self,
        entry: dict[str, str],
        url: str,
        end: float,
        took: float,
        status: int,
        size: int,
        attempts: list[tuple[Upstream | None, int, float, int, int]],
    ) -> None:
        tel = self.runtime.telemetry
        trace_id = int(entry["trace"], 16)
        start_ns = int((end - took) * 1e9)
        end_ns = int(end * 1e9)
        parent = None
        if entry["parent"]:
            remote = SpanContext(trace_id, int(entry["parent"], 16), True, TraceFlags(TraceFlags.SAMPLED))
            parent = trace.set_span_in_context(NonRecordingSpan(remote))
        self.ids.trace_id, self.ids.span_id = trace_id, int(entry["server"], 16)
        tags = http_tags(url=url, method=entry["method"], user_agent=entry["ua"], request_size=_int(entry["clen"]),
                         upstream_cluster=self.inbound_stats.cluster, request_id=entry["rid"],
                         peer=f"{entry['addr']}:{entry['port']}")  # fmt: skip
        server = tel.tracer.start_span(operation_name(self.runtime.spec.fqdn, self.listener.port), parent,
                                       SpanKind.SERVER, {"node_id": tel.node_id, "component": "proxy", **tags},
                                       start_time=start_ns)  # fmt: skip
        client_start = start_ns
        for i, (upstream, code, seconds, _, _) in enumerate(attempts):
            last = i == len(attempts) - 1
            self.ids.span_id = int(entry["client"], 16) if last else int.from_bytes(os.urandom(8), "big") or 1
            name = operation_name(upstream.fqdn, upstream.port) if upstream else entry["up"]
            label = upstream.label if upstream else entry["up"]
            ctags = {**tags, "http.url": f"http://{label}{entry['uri']}",
                     "upstream_cluster": upstream.stats.cluster if upstream else "",
                     "peer.address": f"{upstream.ip}:{upstream.port}" if upstream else ""}  # fmt: skip
            client = tel.tracer.start_span(name, trace.set_span_in_context(server), SpanKind.CLIENT,
                                           {"node_id": tel.node_id, "component": "proxy", **ctags},
                                           start_time=client_start)  # fmt: skip
            client_end = min(end_ns, client_start + int(seconds * 1e9)) if not last else end_ns
            finish(client, code or 502, size if last else 0, None if code else "no answer", end_time=client_end)
            client_start = client_end
        finish(server, status, size, end_time=end_ns)

    def _refresh(self) -> None:
        self.listener.drain()
        self.runtime.registry.set("clover_sdc_lb_servers", len(self.config.slb_list), "Servers in the list")
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
        for key, upstream in self.upstreams.items():
            upstream.stats.gauges["upstream_cx_active"] = open_now.get(key, 0)
