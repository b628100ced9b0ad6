"""Prometheus exposition of Clovisor's counters, drops and map occupancy."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import CollectorRegistry

from clovisor.status import AgentStatus


class _Collector:
    def __init__(self, status: Callable[[], AgentStatus]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        status = self.status()
        kernel = CounterMetricFamily("clovisor_kernel", "Counters of the BPF programs", labels=["counter"])
        for name, value in status.kernel.items():
            kernel.add_metric([name], value)
        yield kernel
        drops = CounterMetricFamily("clovisor_drops", "Records lost, by reason", labels=["reason"])
        for name, value in status.drops.items():
            drops.add_metric([name], value)
        drops.add_metric(["kafka_buffer_full"], status.kafka.dropped)
        drops.add_metric(["evicted_exchanges"], status.counters.evicted_exchanges)
        yield drops
        spans = CounterMetricFamily("clovisor_spans", "Spans exported", labels=["exporter"])
        spans.add_metric(["kafka"], status.kafka.delivered)
        if status.jaeger:
            spans.add_metric(["jaeger"], status.jaeger.stats.delivered)
        yield spans
        maps = GaugeMetricFamily("clovisor_map_entries", "Entries in the bounded BPF maps", labels=["map"])
        for name, value in status.maps.items():
            maps.add_metric([name], value)
        yield maps
        pods = GaugeMetricFamily("clovisor_pods", "Pods traced")
        pods.add_metric([], len(status.pods))
        yield pods
        refused = CounterMetricFamily(
            "clovisor_plugins_refused", "Plugin paths refused: outside the plugin directory or not root-only writable"
        )
        refused.add_metric([], status.plugins.refused)
        yield refused
        pending = GaugeMetricFamily("clovisor_kafka_pending", "Spans buffered for Kafka")
        pending.add_metric([], status.kafka.pending)
        yield pending


def serve_metrics(status: Callable[[], AgentStatus], port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """/metrics on ``host`` (loopback unless configured: CLOVER_CLOVISOR_METRICS_HOST), from
    ``status()`` at each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(status))
    handler = MetricsHandler.factory(registry)
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, name="clovisor-metrics", daemon=True).start()
    return server
