"""Prometheus exposition of Clovisor's counters, drops and map occupancy."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import CollectorRegistry

if TYPE_CHECKING:
    from clovisor.agent import Clovisor


class _Collector:
    def __init__(self, agent: Clovisor) -> None:
        self.agent = agent

    def collect(self) -> Iterator[object]:
        status = self.agent.status()
        kernel = CounterMetricFamily("clovisor_kernel", "Counters of the BPF programs", labels=["counter"])
        for name, value in status["kernel"].items():  # type: ignore[attr-defined]
            kernel.add_metric([name], value)
        yield kernel
        drops = CounterMetricFamily("clovisor_drops", "Records lost, by reason", labels=["reason"])
        for name, value in status["drops"].items():  # type: ignore[attr-defined]
            drops.add_metric([name], value)
        drops.add_metric(["kafka_buffer_full"], self.agent.kafka.stats.dropped)
        drops.add_metric(["evicted_exchanges"], self.agent.counters.evicted_exchanges)
        yield drops
        spans = CounterMetricFamily("clovisor_spans", "Spans exported", labels=["exporter"])
        spans.add_metric(["kafka"], self.agent.kafka.stats.delivered)
        if self.agent.jaeger:
            spans.add_metric(["jaeger"], self.agent.jaeger.stats.delivered)
        yield spans
        maps = GaugeMetricFamily("clovisor_map_entries", "Entries in the bounded BPF maps", labels=["map"])
        for name, value in status["maps"].items():  # type: ignore[attr-defined]
            maps.add_metric([name], value)
        yield maps
        pods = GaugeMetricFamily("clovisor_pods", "Pods traced")
        pods.add_metric([], len(self.agent.attached))
        yield pods
        refused = CounterMetricFamily(
            "clovisor_plugins_refused", "Plugin paths refused: outside the plugin directory or not root-only writable"
        )
        refused.add_metric([], self.agent.plugins.refused)
        yield refused
        pending = GaugeMetricFamily("clovisor_kafka_pending", "Spans buffered for Kafka")
        pending.add_metric([], self.agent.kafka.stats.pending)
        yield pending


def serve_metrics(agent: Clovisor, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """/metrics on ``host`` (loopback unless configured: CLOVER_CLOVISOR_METRICS_HOST)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(agent))  # type: ignore[arg-type]
    handler = MetricsHandler.factory(registry)
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, name="clovisor-metrics", daemon=True).start()
    return server
