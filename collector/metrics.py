"""Pulling the tracked metrics from Prometheus (instant queries, every series of the result)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException

from clover import keys
from protos import records_pb2

log = logging.getLogger(__name__)


class MetricsError(RuntimeError):
    """Prometheus could not be queried."""


@dataclass(frozen=True)
class TrackedMetric:
    """A metric name to collect and the tracked service it belongs to ("" for custom metrics)."""

    name: str
    service: str


def tracked_metrics(
    services: Iterable[str], prefixes: Iterable[str], suffixes: Iterable[str], custom: Iterable[str]
) -> list[TrackedMetric]:
    """The original's prefix + service + suffix names for every tracked service, then the custom ones."""
    names = [
        TrackedMetric(keys.metric_value(p, s, x), keys.underscore(s))
        for s in sorted(services)
        for p in sorted(prefixes)
        for x in sorted(suffixes)
    ]
    seen = {m.name for m in names}
    return names + [TrackedMetric(c, "") for c in sorted(custom) if c not in seen]


def series_key(labels: dict[str, str]) -> str:
    """A stable text form of a series' labels (``a="1",b="2"``)."""
    return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))


class PrometheusSource:
    """Instant queries against the Prometheus HTTP API."""

    def __init__(self, url: str):
        self.client = PrometheusConnect(url=url, disable_ssl=True)

    def samples(self, metric: TrackedMetric) -> list[records_pb2.Metric]:
        """One record per series of the instant vector ``metric.name``."""
        try:
            result = self.client.custom_query(query=metric.name)
        except (PrometheusApiClientException, OSError) as exc:
            raise MetricsError(f"query {metric.name!r} failed: {exc}") from None
        records = []
        for series in result:
            labels = {k: str(v) for k, v in (series.get("metric") or {}).items() if k != "__name__"}
            timestamp, value = series["value"]
            records.append(
                records_pb2.Metric(
                    name=(series.get("metric") or {}).get("__name__", metric.name),
                    value=str(value),
                    timestamp_ms=round(float(timestamp) * 1000),
                    service=metric.service,
                    labels=labels,
                )
            )
        return sorted(records, key=lambda r: series_key(dict(r.labels)))


def latest_value(records: list[records_pb2.Metric]) -> str | None:
    """The value the original kept in Redis under the metric's name: the series' value, or the
    sum over the series when the query returned several."""
    if not records:
        return None
    if len(records) == 1:
        return records[0].value
    try:
        return repr(sum(float(r.value) for r in records))
    except ValueError:
        return records[0].value
