"""Prometheus metrics of a pod, named like Istio 1.0's Envoy statistics.

Istio exported Envoy's cluster statistics through statsd, which turned
``cluster.outbound|9180||clover-server1.default.svc.cluster.local.upstream_rq_2xx`` into
``envoy_cluster_outbound_9180__clover_server1_default_svc_cluster_local_upstream_rq_2xx``:
prefix ``envoy_cluster_<direction>_<port>__`` + service (underscore form) + suffix
``_default_svc_cluster_local_<stat>``. The original's ``set_visibility.yaml`` tracks such names,
so each pod exposes them for

* its own inbound cluster ``inbound|<port>||<service>``: requests it received and answered;
* one outbound cluster per upstream service it calls, ``outbound|<port>||<upstream>``:
  requests it sent there and what came back (the proxy also counts, at its listener, the
  ``outbound|9180||proxy-access-control`` series Istio's ingress gateway would have counted:
  the local chain has no gateway in front of the proxy).

Stats per cluster (counters unless noted): ``upstream_rq_total``, ``upstream_rq_1xx`` ..
``upstream_rq_5xx``, ``upstream_rq_active`` (gauge), ``upstream_rq_time`` (histogram, ms),
``upstream_rq_timeout``, ``upstream_cx_total``, ``upstream_cx_active`` (gauge),
``upstream_cx_connect_fail``, ``upstream_cx_rx_bytes_total``, ``upstream_cx_tx_bytes_total``.
For an inbound cluster the "upstream" connections are the pod's accepted downstream ones.
Pod-specific series carry the ``clover_sdc_`` prefix (see sdc/README.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

RQ_TIME_BUCKETS_MS = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

CLUSTER_COUNTERS = (
    "upstream_rq_total",
    "upstream_rq_1xx",
    "upstream_rq_2xx",
    "upstream_rq_3xx",
    "upstream_rq_4xx",
    "upstream_rq_5xx",
    "upstream_rq_timeout",
    "upstream_cx_total",
    "upstream_cx_connect_fail",
    "upstream_cx_rx_bytes_total",
    "upstream_cx_tx_bytes_total",
)
CLUSTER_GAUGES = ("upstream_rq_active", "upstream_cx_active")


def cluster_name(direction: str, port: int, fqdn: str) -> str:
    """Envoy's cluster name, e.g. ``outbound|9180||http-lb.default.svc.cluster.local``."""
    return f"{direction}|{port}||{fqdn}"


def envoy_metric(cluster: str, stat: str) -> str:
    """The Prometheus name Istio's statsd bridge gave ``cluster.<cluster>.<stat>``."""
    return "envoy_" + re.sub(r"[^a-zA-Z0-9_]", "_", f"cluster.{cluster}.{stat}")


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass
class ClusterStats:
    """The statistics of one Envoy-style cluster."""

    cluster: str
    counters: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CLUSTER_COUNTERS, 0))
    gauges: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CLUSTER_GAUGES, 0))
    buckets: list[int] = field(default_factory=lambda: [0] * len(RQ_TIME_BUCKETS_MS))
    time_sum_ms: float = 0.0
    time_count: int = 0

    def request_started(self) -> None:
        self.gauges["upstream_rq_active"] += 1

    def request_finished(self, status: int, elapsed_ms: float, rx_bytes: int = 0, tx_bytes: int = 0) -> None:
        """Count a request that got an answer (status 0: no answer, counted as a 5xx-less failure)."""
        c = self.counters
        self.gauges["upstream_rq_active"] -= 1
        c["upstream_rq_total"] += 1
        if 100 <= status < 600:
            c[f"upstream_rq_{status // 100}xx"] += 1
        c["upstream_cx_rx_bytes_total"] += rx_bytes
        c["upstream_cx_tx_bytes_total"] += tx_bytes
        self.time_sum_ms += elapsed_ms
        self.time_count += 1
        for i, bound in enumerate(RQ_TIME_BUCKETS_MS):
            if elapsed_ms <= bound:
                self.buckets[i] += 1
                break

    def connection_opened(self) -> None:
        self.counters["upstream_cx_total"] += 1
        self.gauges["upstream_cx_active"] += 1

    def connection_closed(self) -> None:
        self.gauges["upstream_cx_active"] -= 1

    def render(self, out: list[str]) -> None:
        for stat, value in self.counters.items():
            name = envoy_metric(self.cluster, stat)
            out.append(f"# TYPE {name} counter\n{name} {_fmt(value)}\n")
        for stat, value in self.gauges.items():
            name = envoy_metric(self.cluster, stat)
            out.append(f"# TYPE {name} gauge\n{name} {_fmt(value)}\n")
        name = envoy_metric(self.cluster, "upstream_rq_time")
        out.append(f"# TYPE {name} histogram\n")
        cumulative = 0
        for bound, count in zip(RQ_TIME_BUCKETS_MS, self.buckets, strict=True):
            cumulative += count
            out.append(f'{name}_bucket{{le="{_fmt(bound)}"}} {cumulative}\n')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.time_count}\n')
        out.append(f"{name}_sum {_fmt(round(self.time_sum_ms, 3))}\n{name}_count {self.time_count}\n")


@dataclass
class Metric:
    name: str
    kind: str
    help: str
    value: float = 0.0


class Registry:
    """All metrics of one pod; rendered in the Prometheus text format on each scrape."""

    def __init__(self) -> None:
        self.clusters: dict[str, ClusterStats] = {}
        self.metrics: dict[str, Metric] = {}

    def cluster(self, direction: str, port: int, fqdn: str) -> ClusterStats:
        name = cluster_name(direction, port, fqdn)
        stats = self.clusters.get(name)
        if stats is None:
            stats = self.clusters[name] = ClusterStats(name)
        return stats

    def metric(self, name: str, kind: str, help: str) -> Metric:
        metric = self.metrics.get(name)
        if metric is None:
            metric = self.metrics[name] = Metric(name, kind, help)
        return metric

    def inc(self, name: str, amount: float = 1.0, help: str = "") -> None:
        self.metric(name, "counter", help).value += amount

    def set(self, name: str, value: float, help: str = "") -> None:
        self.metric(name, "gauge", help).value = value

    def value(self, name: str) -> float:
        """A metric's current value by its exposed name (envoy_* names included); 0 if absent."""
        if name in self.metrics:
            return self.metrics[name].value
        for stats in self.clusters.values():
            for stat, value in (*stats.counters.items(), *stats.gauges.items()):
                if envoy_metric(stats.cluster, stat) == name:
                    return value
        return 0.0

    def render(self) -> str:
        out: list[str] = []
        for stats in self.clusters.values():
            stats.render(out)
        for metric in self.metrics.values():
            if metric.help:
                out.append(f"# HELP {metric.name} {metric.help}\n")
            out.append(f"# TYPE {metric.name} {metric.kind}\n{metric.name} {_fmt(metric.value)}\n")
        return "".join(out)
