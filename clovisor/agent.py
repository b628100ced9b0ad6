"""The Clovisor process: discovery -> attach -> read the ring buffer -> spans -> exporters.

One thread does the tracing work (ring buffer, spans, map maintenance); Redis pub/sub and the
Kubernetes watches run in helper threads that only set flags. SIGTERM/SIGINT stop the loop;
``close()`` then detaches every program and removes the clsact qdiscs Clovisor added.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from clover import keys
from clover.config import Config
from clovisor import records, tc
from clovisor import settings as settings_mod
from clovisor.datapath import DROP_STATS, Datapath, Limits, prog_run_stats
from clovisor.discovery import Source
from clovisor.export import JaegerExporter, KafkaSpanExporter
from clovisor.metrics import serve_metrics
from clovisor.plugins import PluginSet
from clovisor.spans import Clock, PodInfo, SpanEncoder
from clovisor.status import AgentStatus, Counters, JaegerStatus, PluginStatus, PodStatus, ProgramRunTime
from clovisor.targets import PodTarget
from protos import records_pb2

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    node: str = field(default_factory=lambda: os.environ.get("MY_NODE_NAME") or socket.gethostname())
    exchange_timeout: float = 30.0  # an exchange without its full response is evicted after this
    idle_connection_timeout: float = 300.0
    limits: Limits = field(default_factory=Limits)
    kafka_buffer_spans: int = 100_000
    kafka_buffer_mib: int = 48
    export_incomplete: bool = False
    settings_interval: float = 2.0
    reconcile_interval: float = 2.0
    status_interval: float = 2.0
    status_file: Path | None = None
    metrics_port: int | None = None


@dataclass
class Attached:
    target: PodTarget
    ifindex: int
    attachment: tc.Attachment
    info: PodInfo


class Clovisor:
    def __init__(self, cfg: Config, sources: list[Source], options: Options | None = None) -> None:
        self.cfg = cfg
        self.sources = sources
        self.options = options or Options()
        self.counters = Counters()
        self.settings = settings_mod.Settings()
        self.plugins = PluginSet(plugin_dir=cfg.clovisor_plugin_dir)
        self.encoder = SpanEncoder(Clock())
        self.attached: dict[str, Attached] = {}
        self.by_ifindex: dict[int, Attached] = {}
        self._pending_fields: dict[tuple[object, int], dict[str, str]] = {}
        self._reload: set[str] = set()
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._dirty = threading.Event()
        self.jaeger: JaegerExporter | None = None
        self.ipr = IPRoute()
        removed = tc.clean_stale(self.ipr)
        if removed:
            log.info("cleaned stale Clovisor qdiscs/filters on %s", ", ".join(removed))
        self.datapath = Datapath(self.options.limits)
        self.kafka = KafkaSpanExporter(
            cfg.kafka_bootstrap, self.options.kafka_buffer_spans, self.options.kafka_buffer_mib
        )
        self._redis = self._connect_redis()
        self._refresh_settings()
        self._metrics_server = None
        if self.options.metrics_port:
            self._metrics_server = serve_metrics(self.status, self.options.metrics_port, cfg.clovisor_metrics_host)

    # -- configuration ----------------------------------------------------------------------
    def _connect_redis(self) -> redis.Redis:
        """A client of the configured Redis, and a thread that listens on it for plugin reloads."""
        import redis

        client = redis.Redis.from_url(self.cfg.redis_url, socket_timeout=2, socket_connect_timeout=2)
        threading.Thread(target=self._listen_plugins, args=(client,), name="clovisor-pubsub", daemon=True).start()
        return client

    def _listen_plugins(self, client: redis.Redis) -> None:
        import redis

        backoff = 1.0
        while not self._stop.is_set():
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]  # redis-py: no annotations
                pubsub.subscribe(keys.CLOVISOR_PROTO_PLUGIN_CFG_CHAN)
                backoff = 1.0
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message and message.get("type") == "message":
                        data = message["data"]
                        protocol = data.decode() if isinstance(data, bytes) else str(data)
                        with self._reload_lock:
                            self._reload.add(protocol.strip())
                        self._dirty.set()
                pubsub.close()
            except redis.RedisError as exc:
                log.debug("plugin channel: %s", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30)

    def _refresh_settings(self) -> None:
        import redis

        try:
            new = settings_mod.read(self._redis)
        except redis.RedisError as exc:
            self.counters.redis_errors += 1
            if self.counters.redis_errors in (1, 10, 100) or self.counters.redis_errors % 1000 == 0:
                log.warning("Redis %s unreachable (%s): keeping the current settings", self.cfg.redis_address, exc)
            return
        with self._reload_lock:
            force, self._reload = frozenset(self._reload), set()
        reloaded = self.plugins.sync(new.proto_cfg, force)
        if new != self.settings or reloaded:
            self._dirty.set()
        self.settings = new
        self._update_jaeger()

    def _update_jaeger(self) -> None:
        collector = self.settings.jaeger_collector or self.cfg.clovisor_jaeger_collector
        agent = self.settings.jaeger_agent or self.cfg.clovisor_jaeger_agent
        current = (self.jaeger.collector, self.jaeger.agent) if self.jaeger else (None, None)
        if (collector, agent if not collector else None) == current:
            return
        if self.jaeger:
            self.jaeger.close(timeout=1)
            self.jaeger = None
        if collector or agent:
            self.jaeger = JaegerExporter(collector, None if collector else agent)
            log.info("spans also go to Jaeger %s", self.jaeger.target)

    # -- discovery and attachment -----------------------------------------------------------
    def reconcile(self) -> None:
        """Attach to new targets, update changed ones, detach from those gone."""
        wanted: dict[str, PodTarget] = {}
        for source in self.sources:
            try:
                for target in source.targets(self.settings, self.plugins.protocols):
                    wanted[target.key] = target
            except Exception as exc:
                log.warning("discovery %s failed: %s", source.name, exc)
                return  # keep what is attached rather than detach everything
        for key in [k for k in self.attached if k not in wanted]:
            self._detach(key)
        for key, target in wanted.items():
            current = self.attached.get(key)
            if current is not None and current.target.host_veth != target.host_veth:
                self._detach(key)
                current = None
            if current is None:
                self._attach(target)
            else:
                current.target = target
                self._configure(self.attached[key])

    def _attach(self, target: PodTarget) -> None:
        found = self.ipr.link_lookup(ifname=target.host_veth)
        if not found:
            log.warning("pod %s: veth %s not found", target.key, target.host_veth)
            return
        ifindex = found[0]
        try:
            attachment = tc.attach(self.ipr, ifindex, self.datapath.to_pod.fd, self.datapath.from_pod.fd)
        except NetlinkError as exc:
            log.error("pod %s: attaching to %s failed: %s", target.key, target.host_veth, exc)
            return
        info = PodInfo(target.name, target.namespace, target.service, self.options.node)
        entry = Attached(target, ifindex, attachment, info)
        self.attached[target.key] = entry
        self.by_ifindex[ifindex] = entry
        self._configure(entry)
        log.info("tracing pod %s on %s (ports %s)", target.key, target.host_veth, dict(target.ports))

    def _configure(self, entry: Attached) -> None:
        plugins = self.plugins.protocols
        ports = {port: (proto, proto in plugins) for port, proto in entry.target.ports.items()}
        egress = {
            (rule.ip, rule.port): ("http", "http" in plugins) for rule in self.settings.egress_for(entry.target.name)
        }
        self.datapath.replace_interface_config(entry.ifindex, ports, egress)

    def _detach(self, key: str) -> None:
        entry = self.attached.pop(key)
        self.by_ifindex.pop(entry.ifindex, None)
        try:
            tc.detach(self.ipr, entry.attachment)
        except NetlinkError as exc:
            log.warning("pod %s: detaching failed: %s", key, exc)
        self.datapath.clear_interface(entry.ifindex)
        log.info("stopped tracing pod %s", key)

    # -- records ----------------------------------------------------------------------------
    def _protocol(self, entry: Attached, server_port: int, egress: bool) -> str:
        return "http" if egress else entry.target.ports.get(server_port, "http")

    def handle(self, rec: memoryview) -> None:
        kind = rec[0]
        if kind == records.REC_PAYLOAD:
            payload = records.decode_payload(rec)
            entry = self.by_ifindex.get(payload.conn_key[0])
            if entry is None:
                return
            proto = entry.target.ports.get(payload.conn_key[4], "http")
            session = records.session_key(*payload.conn_key[1:])
            found = self.plugins.feed(proto, payload.conn_key, session, payload.is_request, payload.data)
            if found:
                pending = self._pending_fields.setdefault((payload.conn_key, payload.seq), {})
                pending.update(found)
                if len(self._pending_fields) > 100_000:  # exchanges never completed
                    self._pending_fields.pop(next(iter(self._pending_fields)))
            return
        entry = self.by_ifindex.get(records.ifindex_of(rec))
        if entry is None:
            self.counters.unknown_interface += 1
            return
        extra = None
        if self._pending_fields or kind == records.REC_TCP:
            conn_key, seq = records.identity_of(rec)
            extra = self._pending_fields.pop((conn_key, seq), None)
            if extra:
                self.counters.plugin_fields += len(extra)
            if kind == records.REC_TCP:
                self.counters.tcp_connections += 1
                self.plugins.forget(conn_key)
        if kind == records.REC_INCOMPLETE:
            self.counters.incomplete += 1
            if not self.options.export_incomplete:
                return
        key, value = self.encoder.encode(rec, entry.info, extra)
        self.kafka.send_raw(key, value)
        if self.jaeger is not None:
            self.jaeger.send(records_pb2.Span.FromString(value))
        self.counters.spans += 1

    def drain(self) -> int:
        n = 0
        handle = self.handle
        for rec in self.datapath.ring.drain():
            handle(rec)
            n += 1
        return n

    # -- status -----------------------------------------------------------------------------
    def status(self) -> AgentStatus:
        kernel = self.datapath.stats()
        return AgentStatus(
            node=self.options.node,
            pods={
                k: PodStatus(a.target.host_veth, a.target.ip, a.target.service, dict(a.target.ports))
                for k, a in sorted(self.attached.items())
            },
            kernel=kernel,
            drops={name: kernel[name] for name in DROP_STATS},
            maps=self.datapath.occupancy(),
            ring_pending_bytes=self.datapath.ring.pending(),
            limits=self.options.limits,
            counters=replace(self.counters),
            span_encoder="c" if self.encoder.compiled else "python",
            kafka=replace(self.kafka.stats),
            jaeger=JaegerStatus(replace(self.jaeger.stats), self.jaeger.target) if self.jaeger else None,
            plugins=PluginStatus(
                loaded=sorted(self.plugins.protocols),
                errors=dict(self.plugins.errors),
                failures=self.plugins.failures,
                refused=self.plugins.refused,
                directory=str(self.plugins.plugin_dir),
            ),
            settings_errors=list(self.settings.errors),
            bpf_programs=self._program_stats(),
        )

    def _program_stats(self) -> dict[str, ProgramRunTime]:
        out = {}
        for fd in self.datapath.program_fds:
            stats = prog_run_stats(fd)
            out[stats.name] = ProgramRunTime(stats.run_time_ns, stats.run_cnt)
        return out

    def _write_status(self) -> None:
        path = self.options.status_file
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status().to_json(), indent=1, sort_keys=True))
        os.replace(tmp, path)

    # -- the loop ---------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        self.reconcile()
        now = time.monotonic()
        next_settings = now + self.options.settings_interval
        next_reconcile = now + self.options.reconcile_interval
        next_status = now
        sweep_every = max(0.5, min(self.options.exchange_timeout / 2, 10.0))
        next_sweep = now + sweep_every
        ring = self.datapath.ring
        while not self._stop.is_set():
            if ring.wait(0.05):
                time.sleep(0.01)  # let a batch gather: fewer wake-ups per record
            self.drain()
            self.kafka.poll()
            now = time.monotonic()
            if now >= next_settings:
                self._refresh_settings()
                next_settings = now + self.options.settings_interval
            if self._dirty.is_set() or now >= next_reconcile or any(s.changed() for s in self.sources):
                self._dirty.clear()
                if self._reload:
                    self._refresh_settings()
                self.reconcile()
                next_reconcile = now + self.options.reconcile_interval
            if now >= next_sweep:
                ex, conns = self.datapath.evict(
                    int(self.options.exchange_timeout * 1e9), int(self.options.idle_connection_timeout * 1e9)
                )
                self.counters.evicted_exchanges += ex
                self.counters.evicted_connections += conns
                if ex:
                    log.info("evicted %d exchanges without a response after %.0fs", ex, self.options.exchange_timeout)
                next_sweep = now + sweep_every
            if now >= next_status:
                self._write_status()
                next_status = now + self.options.status_interval
        self.drain()

    def close(self, flush_timeout: float = 10.0) -> None:
        """Detach from every pod (removing the qdiscs Clovisor added) and flush the exporters."""
        self._stop.set()
        for key in list(self.attached):
            self._detach(key)
        for source in self.sources:
            source.close()
        with contextlib.suppress(ValueError):
            self.drain()
        left = self.kafka.flush(flush_timeout)
        if left:
            log.error("%d spans could not be delivered to Kafka before exit", left)
        if self.jaeger is not None:
            self.jaeger.close()
        self._write_status()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        self.datapath.close()
        self.ipr.close()
