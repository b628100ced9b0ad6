"""The collection loop: tracked services and metrics from Redis, spans from the trace backend,
samples from Prometheus, records to Kafka.

Polling is incremental. Each service has a watermark (kept in Redis, so a restart resumes it);
a cycle asks for spans that started after ``watermark - overlap`` — the overlap catches spans
the backend received late — and drops the (trace id, span id) pairs already sent or waiting to
be. A watermark moves only past spans Kafka acknowledged: after a cycle's flush, the pairs
Kafka acknowledged and the watermarks of the services with nothing left unacknowledged are
written to Redis in one transaction. So a collector killed while Kafka is down reads the
unacknowledged spans from the backend again, and a restarted one repeats no pair it recorded
as sent. Only a kill between Kafka's acknowledgement and that transaction sends spans twice
(the ingest's upserts store them once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from clover import keys, topics
from collector.convert import MalformedSpan
from collector.metrics import PrometheusSource, TrackedMetric, latest_value, series_key, tracked_metrics
from collector.publisher import KafkaPublisher, Record
from collector.sources import BackendError, TraceSource
from protos import records_pb2

log = logging.getLogger(__name__)

# How far before its watermark a cycle looks again, for spans the backend received late.
OVERLAP_SECONDS = 30.0
# How many pairs one ZMSCORE asks about.
SENT_LOOKUP_CHUNK = 5_000


@dataclass(frozen=True)
class SpanReceipt:
    """A published span, as the collector records it once Kafka acknowledged it."""

    service: str
    trace_id: str
    span_id: str
    start_us: int

    @property
    def ident(self) -> tuple[str, str]:
        return (self.trace_id, self.span_id)


def sent_member(trace_id: str, span_id: str) -> str:
    """The member of ``keys.COLLECTOR_SENT_SPANS`` for a span."""
    return f"{trace_id}/{span_id}"


@dataclass
class Counters:
    cycles: int = 0
    spans_published: int = 0
    metrics_published: int = 0
    malformed_spans: int = 0
    duplicate_spans: int = 0
    last_cycle_seconds: float = 0.0
    last_error: str = ""
    tracked_services: list[str] = field(default_factory=list)


class Collector:
    """One collector: call ``run_cycle`` yourself, or ``run`` until a stop event is set."""

    def __init__(
        self,
        store: redis.Redis,
        source: TraceSource,
        prometheus: PrometheusSource,
        publisher: KafkaPublisher,
        interval_s: float = 5.0,
        overlap_s: float = OVERLAP_SECONDS,
        first_lookback_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self.source = source
        self.prometheus = prometheus
        self.publisher = publisher
        self.interval_s = interval_s
        self.overlap_us = int(overlap_s * 1_000_000)
        self.first_lookback_us = int(first_lookback_s * 1_000_000)
        self.clock = clock
        self.counters = Counters()
        # Spans in the Kafka buffer, and spans Kafka acknowledged that Redis does not hold yet.
        self._pending: dict[tuple[str, str], SpanReceipt] = {}
        self._acked: dict[tuple[str, str], SpanReceipt] = {}
        # Per service, the end of the last window whose spans all went to the buffer.
        self._fetched_until: dict[str, int] = {}
        self._seen_samples: dict[tuple[str, str], int] = {}

    # -- configuration -------------------------------------------------------------------------

    def _members(self, key: str) -> set[str]:
        return {m.decode() if isinstance(m, bytes) else m for m in self.store.smembers(key)}

    def _watermark(self, service: str, now_us: int) -> int:
        raw = self.store.hget(keys.COLLECTOR_WATERMARKS, service)
        return int(raw) if raw is not None else now_us - self.first_lookback_us

    # -- one cycle -----------------------------------------------------------------------------

    def run_cycle(self) -> None:
        started = time.monotonic()
        errors: list[str] = []
        services = sorted(self._members(keys.VISIBILITY_SERVICES))
        self.counters.tracked_services = services
        try:
            self._refresh_tracing_services()
        except BackendError as exc:
            errors.append(str(exc))
        for service in services:
            try:
                self._collect_spans(keys.hyphen(service))
            except BackendError as exc:
                errors.append(str(exc))
        metrics = tracked_metrics(
            services,
            self._members(keys.METRIC_PREFIXES),
            self._members(keys.METRIC_SUFFIXES),
            self._members(keys.CUSTOM_METRICS),
        )
        for metric in metrics:
            try:
                self._collect_metric(metric)
            except Exception as exc:  # Prometheus errors come in several types; none may stop the loop
                errors.append(f"metric {metric.name}: {exc}")
        self.commit(self.publisher.flush())
        self._forget_old_spans(services)
        self.counters.cycles += 1
        self.counters.last_cycle_seconds = time.monotonic() - started
        self.counters.last_error = "; ".join(errors)[:2000]
        for error in errors:
            log.warning("%s", error)

    def _refresh_tracing_services(self) -> None:
        names = self.source.services()
        with self.store.pipeline(transaction=True) as pipe:
            pipe.delete(keys.TRACING_SERVICES)
            if names:
                pipe.sadd(keys.TRACING_SERVICES, *names)
            pipe.execute()

    def _collect_spans(self, service: str) -> None:
        now_us = int(self.clock() * 1_000_000)
        watermark = self._watermark(service, now_us)
        candidates: dict[tuple[str, str], records_pb2.Span] = {}
        for item in self.source.spans(service, watermark - self.overlap_us, now_us):
            if isinstance(item, MalformedSpan):
                self.counters.malformed_spans += 1
                log.warning("skipped malformed span: %s", item)
                continue
            ident = (item.trace_id, item.span_id)
            if ident in candidates or ident in self._pending or ident in self._acked:
                self.counters.duplicate_spans += 1
                continue
            candidates[ident] = item
        sent = self._already_sent(list(candidates))
        self.counters.duplicate_spans += len(sent)
        receipts = [
            SpanReceipt(service, span.trace_id, span.span_id, span.start_time_us)
            for ident, span in candidates.items()
            if ident not in sent
        ]
        records = [
            Record(topics.SPANS, r.trace_id.encode(), candidates[r.ident].SerializeToString(), receipt=r)
            for r in receipts
        ]
        if not self.publisher.offer(records):
            log.warning("Kafka buffer full (%d records): %s waits at its watermark", self.publisher.buffered, service)
            return
        self._pending.update((r.ident, r) for r in receipts)
        self._fetched_until[service] = max(now_us, watermark, self._fetched_until.get(service, 0))  # never backwards

    def _already_sent(self, idents: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of ``idents`` that Redis records as acknowledged by Kafka."""
        sent: set[tuple[str, str]] = set()
        for start in range(0, len(idents), SENT_LOOKUP_CHUNK):
            chunk = idents[start : start + SENT_LOOKUP_CHUNK]
            scores = self.store.zmscore(keys.COLLECTOR_SENT_SPANS, [sent_member(*ident) for ident in chunk])
            sent.update(ident for ident, score in zip(chunk, scores, strict=True) if score is not None)
        return sent

    def commit(self, acked: list[Record]) -> None:
        """Record in Redis, in one transaction, the spans Kafka acknowledged and the watermark of
        every service none of whose spans still waits for Kafka."""
        for record in acked:
            if isinstance(record.receipt, SpanReceipt):
                self._pending.pop(record.receipt.ident, None)
                self._acked[record.receipt.ident] = record.receipt
        waiting = {r.service for r in self._pending.values()}
        ready = {service: until for service, until in self._fetched_until.items() if service not in waiting}
        if not self._acked and not ready:
            return
        with self.store.pipeline(transaction=True) as pipe:
            if self._acked:
                pipe.zadd(
                    keys.COLLECTOR_SENT_SPANS,
                    {sent_member(r.trace_id, r.span_id): r.start_us for r in self._acked.values()},
                )
            if ready:
                pipe.hset(keys.COLLECTOR_WATERMARKS, mapping={service: str(until) for service, until in ready.items()})
            pipe.execute()
        self.counters.spans_published += len(self._acked)
        self._acked.clear()
        for service in ready:
            del self._fetched_until[service]

    def _collect_metric(self, metric: TrackedMetric) -> None:
        samples = self.prometheus.samples(metric)
        fresh = []
        for sample in samples:
            ident = (sample.name, series_key(dict(sample.labels)))
            if self._seen_samples.get(ident) == sample.timestamp_ms:
                continue
            fresh.append(sample)
        if not fresh:
            return
        records = [Record(topics.METRICS, s.name.encode(), s.SerializeToString()) for s in fresh]
        if not self.publisher.offer(records):
            return
        for sample in fresh:
            self._seen_samples[(sample.name, series_key(dict(sample.labels)))] = sample.timestamp_ms
        self.counters.metrics_published += len(fresh)
        value = latest_value(samples)
        if value is not None:
            self.store.set(metric.name, value)

    def _forget_old_spans(self, services: list[str]) -> None:
        """Drop the sent pairs no cycle can read again: those that started well before the oldest
        tracked watermark's overlap (a trace's older spans come along with its newer ones)."""
        names = [keys.hyphen(s) for s in services]
        raw: list[Any] = self.store.hmget(keys.COLLECTOR_WATERMARKS, names) if names else []
        if not raw or any(value is None for value in raw):
            return
        horizon = min(int(value) for value in raw) - 2 * self.overlap_us - int(4 * self.interval_s * 1_000_000)
        self.store.zremrangebyscore(keys.COLLECTOR_SENT_SPANS, "-inf", f"({horizon}")

    # -- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.run_cycle()
            except redis.RedisError as exc:
                self.counters.last_error = f"Redis unavailable: {exc}"
                log.warning("cycle skipped: Redis unavailable: %s", exc)
            stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
        try:
            self.commit(self.publisher.flush())
        except redis.RedisError as exc:
            log.warning("the last acknowledged spans were not recorded (they will be sent again): %s", exc)
