"""IDS alerts: the Redis event hash, the fast alert log line, and ProcessAlerts to the proxy.

The event hash keeps the original's field names (Snort's unified2 Event merged with its
Packet, docs/compatibility.md §3f) and adds ``msg``, ``classtype`` and ``trace-id``. For an alert raised by
an HTTP request copied by the proxy, the addresses are those of the client's connection to the
proxy (client -> proxy:9180), ``data`` is the request as the client sent it (head and at most
64 KiB of body) and ``linktype`` is ``None`` (no link layer); for a captured packet ``data`` is
the Ethernet frame and ``linktype`` 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import redis.asyncio as aioredis
from opentelemetry.trace import SpanKind
from redis.typing import EncodableT, FieldT

from clover import keys
from clover.config import Config
from protos import nginx_pb2, nginx_pb2_grpc
from sdc import topology
from sdc.accesslog import AlertEntry, open_access_log, timestamp
from sdc.ids.rules import PROTO_NUMBERS, Rule, Subject
from sdc.names import Resolver
from sdc.tracing import Telemetry

log = logging.getLogger(__name__)

PROXY = "proxy-access-control"
ALERT_LOG = "alert"
IDS_POD = "snort-ids"
ALERTS_LOG_NAME = "snort-ids-alerts"  # <access log dir>/snort-ids-alerts.log, shipped with the access logs
QUEUE_LIMIT = 10_000
PACKET_ALERT_COALESCE_SECONDS = 1.0


@dataclass
class Alert:
    rule: Rule
    subject: Subject
    time: float
    data: bytes
    linktype: int | None
    traceparent: str = ""
    from_packet: bool = False


def event_fields(alert: Alert, event_id: int, trace_id: str = "") -> dict[FieldT, EncodableT]:
    """The ``snort_event:<id>`` hash of one alert."""
    s = alert.subject
    second = int(alert.time)
    micro = int((alert.time - second) * 1_000_000)
    icmp = s.proto == "icmp"
    fields: dict[FieldT, EncodableT] = {
        "sensor-id": "0",
        "event-id": str(event_id),
        "event-second": str(second),
        "event-microsecond": str(micro),
        "signature-id": str(alert.rule.sid),
        "generator-id": str(alert.rule.gid),
        "signature-revision": str(alert.rule.rev),
        "classification-id": str(alert.rule.classification_id),
        "priority": str(alert.rule.priority),
        "source-ip": str(s.src),
        "destination-ip": str(s.dst),
        "source-ip.raw": s.src.packed,
        "destination-ip.raw": s.dst.packed,
        "sport-itype": str(s.icmp_type if icmp else s.sport),
        "dport-icode": str(s.icmp_code if icmp else s.dport),
        "protocol": str(PROTO_NUMBERS[s.proto]),
        "impact-flag": "0",
        "impact": "0",
        "blocked": "0",
        "mpls-label": "None",
        "vlan-id": "None",
        "pad2": "None",
        "appid": "None",
        "packets": "[]",
        "extra-data": "[]",
        "packet-second": str(second),
        "packet-microsecond": str(micro),
        "linktype": str(alert.linktype),
        "length": str(len(alert.data)),
        "data": alert.data,
        "msg": alert.rule.msg,
        "classtype": alert.rule.classtype or "None",
        "trace-id": trace_id or "None",
    }
    return fields


def fast_line(alert: Alert) -> str:
    """Snort's "fast" alert format, one line per alert."""
    r, s = alert.rule, alert.subject
    stamp = time.strftime("%m/%d-%H:%M:%S", time.localtime(alert.time)) + f".{int(alert.time % 1 * 1e6):06d}"
    ports = s.proto in ("tcp", "udp")
    src = f"{s.src}:{s.sport}" if ports else str(s.src)
    dst = f"{s.dst}:{s.dport}" if ports else str(s.dst)
    klass = f" [Classification: {r.classtype}]" if r.classtype else ""
    return (
        f"{stamp}  [**] [{r.gid}:{r.sid}:{r.rev}] {r.msg} [**]{klass} [Priority: {r.priority}] "
        f"{{{s.proto.upper()}}} {src} -> {dst}\n"
    )


def alert_entry(alert: Alert, event_id: int, stream: str) -> AlertEntry:
    """The alert as the structured entry the log shipper reads (``<access log dir>/snort-ids-alerts.log``)."""
    r, s = alert.rule, alert.subject
    return AlertEntry(time=timestamp(alert.time), stream=stream, pod=IDS_POD, sid=int(r.sid), msg=r.msg,
                      classtype=r.classtype or "", priority=int(r.priority), eventId=event_id, sourceIp=str(s.src),
                      destinationIp=str(s.dst), traceId=trace_id_of(alert.traceparent))  # fmt: skip


def trace_id_of(traceparent: str) -> str:
    parts = traceparent.split("-")
    return parts[1] if len(parts) >= 4 and len(parts[1]) == 32 else ""


class AlertSink:
    """Writes alerts in order; survives Redis or the proxy being away (retries Redis, logs and
    counts failed ProcessAlerts)."""

    def __init__(self, cfg: Config, telemetry: Telemetry, log_dir: Path):
        self.cfg = cfg
        self.telemetry = telemetry
        self.log_path = log_dir / ALERT_LOG
        self.alert_log, self.stream = open_access_log(ALERTS_LOG_NAME)
        self.redis = aioredis.Redis.from_url(cfg.redis_url, socket_timeout=5, socket_connect_timeout=3)
        self.resolver = Resolver(cfg)
        self.queue: asyncio.Queue[Alert] = asyncio.Queue(QUEUE_LIMIT)
        self.channels: dict[str, grpc.aio.Channel] = {}
        self.counts = {"alerts": 0, "alerts_dropped": 0, "process_alerts_sent": 0, "process_alerts_failed": 0,
                       "process_alerts_coalesced": 0}  # fmt: skip
        self._last_reported: dict[str, float] = {}
        self._worker: asyncio.Task[None] | None = None
        self.busy = False

    def start(self) -> None:
        self._worker = asyncio.create_task(self._run())

    def submit(self, alert: Alert) -> None:
        try:
            self.queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.counts["alerts_dropped"] += 1

    async def _run(self) -> None:
        while True:
            alert = await self.queue.get()
            self.busy = True
            delay = 0.5
            while True:
                try:
                    event_id = await self._store(alert)
                    break
                except (aioredis.RedisError, OSError) as exc:
                    log.warning(
                        "cannot store alert sid %s in Redis (%s); retrying in %.1fs", alert.rule.sid, exc, delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
            self.counts["alerts"] += 1
            with contextlib.suppress(OSError), open(self.log_path, "a") as f:
                f.write(fast_line(alert))
            self.alert_log.write(alert_entry(alert, event_id, self.stream))
            await self._process_alert(alert, event_id)
            self.busy = False

    @property
    def pending(self) -> int:
        """Alerts not yet stored and reported."""
        return self.queue.qsize() + int(self.busy)

    async def _store(self, alert: Alert) -> int:
        event_id = int(await self.redis.incr(keys.SNORT_EVENT_SEQ))
        fields = event_fields(alert, event_id, trace_id_of(alert.traceparent))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.snort_event(event_id), mapping=fields)
            pipe.sadd(keys.SNORT_EVENTS, str(event_id))
            await pipe.execute()
        return event_id

    async def _process_alert(self, alert: Alert, event_id: int) -> None:
        source = str(alert.subject.src)
        now = time.monotonic()
        if alert.from_packet and now - self._last_reported.get(source, -1e9) < PACKET_ALERT_COALESCE_SECONDS:
            self.counts["process_alerts_coalesced"] += 1
            return
        self._last_reported[source] = now
        parent = self.telemetry.extract({"traceparent": alert.traceparent}) if alert.traceparent else None
        url = f"http://{PROXY}:{topology.GRPC_PORT}/nginx.Controller/ProcessAlerts"
        cluster = f"outbound|{topology.GRPC_PORT}||{PROXY}.{topology.NAMESPACE}.{topology.CLUSTER_DOMAIN}"
        tags: dict[str, str | int | bool] = {"http.url": url, "rpc.system": "grpc", "event_id": str(event_id),
                                             "upstream_cluster": cluster}  # fmt: skip
        span = self.telemetry.start("nginx.Controller/ProcessAlerts", SpanKind.CLIENT, parent, tags)
        carrier: dict[str, str] = {}
        self.telemetry.inject(carrier, span)
        try:
            ips, _ = await self.resolver.resolve_async(PROXY)
            channel = self._channel(f"{ips[0]}:{topology.GRPC_PORT}")
            stub = nginx_pb2_grpc.ControllerStub(channel)
            message = nginx_pb2.AlertMessage(
                event_id=str(event_id), redis_key=keys.SNORT_EVENTS, source_ip=source,
                signature_id=str(alert.rule.sid), msg=alert.rule.msg,
            )  # fmt: skip
            await stub.ProcessAlerts(message, timeout=3, metadata=tuple(carrier.items()))
            self.counts["process_alerts_sent"] += 1
        except Exception as exc:
            self.counts["process_alerts_failed"] += 1
            log.warning("ProcessAlerts for event %s to %s failed: %s", event_id, PROXY, exc)
            if span.is_recording():
                span.set_attribute("error", True)
        finally:
            span.end()

    def _channel(self, target: str) -> grpc.aio.Channel:
        channel = self.channels.get(target)
        if channel is None:
            channel = self.channels[target] = grpc.aio.insecure_channel(target)
        return channel

    async def close(self, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.queue.empty() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for channel in self.channels.values():
            await channel.close()
        await self.redis.aclose()
        self.alert_log.close()


def valid_ip(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False
