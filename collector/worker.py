"""The collection loop: tracked services and metrics from Redis, spans from the trace backend,
samples from Prometheus, records to Kafka.

Polling is incremental. Each service has a watermark (kept in Redis, so a restart resumes it);
a cycle asks for spans that started after ``watermark - overlap`` — the overlap catches spans
the backend received late — and drops the (trace id, span id) pairs it already published.
When the Kafka buffer is full the watermark does not move, so nothing is skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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
        self._seen_spans: dict[tuple[str, str], int] = {}
        self._seen_samples: dict[tuple[str, str], int] = {}

    # -- configuration -------------------------------------------------------------------------

    def _members(self, key: str) -> set[str]:
        return {m.decode() if isinstance(m, bytes) else m for m in self.store.smembers(key)}  # type: ignore[union-attr]

    def _watermark(self, service: str, now_us: int) -> int:
        raw = self.store.hget(keys.COLLECTOR_WATERMARKS, service)
        return int(raw) if raw is not None else now_us - self.first_lookback_us  # type: ignore[arg-type]

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
        self.publisher.flush()
        self._forget_old_spans()
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
        fresh: list[records_pb2.Span] = []
        batch_ids: set[tuple[str, str]] = set()
        for item in self.source.spans(service, watermark - self.overlap_us, now_us):
            if isinstance(item, MalformedSpan):
                self.counters.malformed_spans += 1
                log.warning("skipped malformed span: %s", item)
                continue
            ident = (item.trace_id, item.span_id)
            if ident in self._seen_spans or ident in batch_ids:
                self.counters.duplicate_spans += 1
                continue
            batch_ids.add(ident)
            fresh.append(item)
        records = [Record(topics.SPANS, s.trace_id.encode(), s.SerializeToString()) for s in fresh]
        if not self.publisher.offer(records):
            log.warning("Kafka buffer full (%d records): %s waits at its watermark", self.publisher.buffered, service)
            return
        for span in fresh:
            self._seen_spans[(span.trace_id, span.span_id)] = span.start_time_us
        self.counters.spans_published += len(fresh)
        self.store.hset(keys.COLLECTOR_WATERMARKS, service, str(max(now_us, watermark)))  # never backwards

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

    def _forget_old_spans(self) -> None:
        horizon = int(self.clock() * 1_000_000) - 2 * self.overlap_us - int(4 * self.interval_s * 1_000_000)
        if len(self._seen_spans) > 10_000:
            self._seen_spans = {k: v for k, v in self._seen_spans.items() if v >= horizon}

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
        self.publisher.flush()
