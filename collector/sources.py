"""Trace backends the collector pulls from: Jaeger's query API and Zipkin's v2 API.

Both answer "which services exist" and "the traces of a service in [start, end]". When a window
holds as many traces as the query limit, it is split in halves until each half fits, so no
trace is silently cut off.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Protocol

import requests

from collector.convert import MalformedSpan, jaeger_trace_spans, zipkin_trace_spans
from protos import records_pb2

log = logging.getLogger(__name__)

SpanOrError = records_pb2.Span | MalformedSpan


class BackendError(RuntimeError):
    """The trace backend could not be reached or answered something unusable."""


class TraceSource(Protocol):
    name: str

    def services(self) -> list[str]: ...

    def spans(self, service: str, start_us: int, end_us: int) -> Iterator[SpanOrError]: ...


def _get_json(session: requests.Session, url: str, params: dict[str, Any], timeout: float) -> Any:
    try:
        response = session.get(url, params=params, timeout=timeout)
    except requests.RequestException as exc:
        raise BackendError(f"GET {url} failed: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        raise BackendError(f"GET {url} answered {response.status_code}: {response.text[:200]}")
    try:
        return response.json()
    except ValueError:
        raise BackendError(f"GET {url} did not answer JSON") from None


class HttpSource:
    """What both backends' sources share: the base URL, the query limit, one HTTP session."""

    def __init__(self, base_url: str, limit: int = 1000, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.limit = limit
        self.timeout = timeout
        self.session = requests.Session()


class JaegerSource(HttpSource):
    """Jaeger query API: ``/api/services`` and ``/api/traces`` with microsecond bounds."""

    name = "jaeger"

    def services(self) -> list[str]:
        body = _get_json(self.session, f"{self.base_url}/api/services", {}, self.timeout)
        return sorted(body.get("data") or [])

    def _traces(self, service: str, start_us: int, end_us: int) -> list[dict[str, Any]]:
        params = {
            "service": service,
            "start": start_us,
            "end": end_us,
            "limit": self.limit,
            "lookback": "custom",
        }
        body = _get_json(self.session, f"{self.base_url}/api/traces", params, self.timeout)
        if body.get("errors") and body.get("data") is None:
            raise BackendError(f"jaeger refused the traces query for {service}: {body['errors']}")
        return list(body.get("data") or [])

    def spans(self, service: str, start_us: int, end_us: int) -> Iterator[SpanOrError]:
        for trace in _split_until_complete(self._traces, service, start_us, end_us, self.limit):
            yield from jaeger_trace_spans(trace)


class ZipkinSource(HttpSource):
    """Zipkin v2 API: ``/api/v2/services`` and ``/api/v2/traces`` (endTs and lookback in ms)."""

    name = "zipkin"

    def services(self) -> list[str]:
        return sorted(_get_json(self.session, f"{self.base_url}/api/v2/services", {}, self.timeout) or [])

    def _traces(self, service: str, start_us: int, end_us: int) -> list[list[dict[str, Any]]]:
        end_ms = end_us // 1000
        params = {
            "serviceName": service,
            "endTs": end_ms,
            "lookback": max(1, end_ms - start_us // 1000),
            "limit": self.limit,
        }
        return list(_get_json(self.session, f"{self.base_url}/api/v2/traces", params, self.timeout) or [])

    def spans(self, service: str, start_us: int, end_us: int) -> Iterator[SpanOrError]:
        for trace in _split_until_complete(self._traces, service, start_us, end_us, self.limit):
            yield from zipkin_trace_spans(trace)


def _split_until_complete(fetch: Any, service: str, start_us: int, end_us: int, limit: int) -> Iterator[Any]:
    """The traces of [start, end], halving the window while a query comes back full."""
    traces = fetch(service, start_us, end_us)
    if len(traces) < limit or end_us - start_us <= 1000:
        if len(traces) >= limit:
            log.warning("%s: %d traces in one millisecond; some may be missing", service, len(traces))
        yield from traces
        return
    middle = (start_us + end_us) // 2
    yield from _split_until_complete(fetch, service, start_us, middle, limit)
    yield from _split_until_complete(fetch, service, middle + 1, end_us, limit)


def make_source(backend: str, base_url: str) -> TraceSource:
    """The source for ``backend`` ("jaeger" or "zipkin")."""
    if backend == "jaeger":
        return JaegerSource(base_url)
    if backend == "zipkin":
        return ZipkinSource(base_url)
    raise ValueError(f"unknown trace backend {backend!r}: use jaeger or zipkin")
