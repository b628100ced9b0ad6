"""The visibility service: the collector (start, stop, status, the Cassandra tables), what
visibility tracks, and the analysed results the Spark jobs publish to Redis."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import redis
from google.protobuf.json_format import MessageToDict

from clover import figures
from clover.config import Config
from collector import client as collector
from controller import schemas, stats
from controller.errors import ApiError, Problem, bad_request, invalid
from controller.validate import check
from jobs.publish import clear_published

UPDATED = "Updated visibility config"
TRACK_ONE = "Specify at least one service to track"


def chosen_source(source: str | None) -> str | None:
    """A figures source from a request (None: each service's headline source)."""
    if source in (None, ""):
        return None
    if source not in figures.SOURCES:
        raise bad_request(f"source {source!r} must be one of {', '.join(figures.SOURCES)}", "source")
    return source


def _collector_error(exc: collector.CollectorUnavailable) -> ApiError:
    text = str(exc)
    if text.startswith("invalid request: "):
        return bad_request(f"Invalid value in json/yaml: {text.removeprefix('invalid request: ')}")
    return ApiError(503, text)


def _reply(text: str) -> str:
    """A collector reply that reports a failure becomes an error (409 for a state conflict)."""
    if text.startswith("Failed"):
        raise ApiError(409 if "not running" in text else 500, text)
    return text


def _text(value: Any) -> str:
    return str(value).strip()


class VisibilityService:
    def __init__(self, cfg: Config, store: redis.Redis):
        self.cfg = cfg
        self.store = store

    def _collector(self, call: Callable[..., str], **settings: Any) -> str:
        try:
            return _reply(call(self.cfg.collector_grpc, **settings))
        except collector.CollectorUnavailable as exc:
            raise _collector_error(exc) from None

    def init_visibility(self) -> str:
        return self._collector(collector.init_visibility)

    def truncate(self) -> str:
        return self._collector(collector.truncate_visibility)

    def collector_settings(self, body: Mapping[str, Any] | None) -> dict[str, Any]:
        """StartCollector's fields from a start_visibility body. A missing field takes a default
        (the original refused the body unless all five were there, docs/compatibility.md §11.7): a host without its
        port gets the port of the configured endpoint; nothing at all leaves the collector its
        own configuration."""
        check(schemas.COLLECTOR_START, body, "Invalid value in json/yaml")
        body = body or {}
        settings: dict[str, Any] = {}
        if "sample_interval" in body:
            settings["sinterval"] = float(body["sample_interval"])
        backend = str(body.get("t_backend") or self.cfg.trace_backend)
        if "t_backend" in body:
            settings["t_backend"] = backend
        trace = urlsplit(self.cfg.jaeger_url if backend == "jaeger" else self.cfg.zipkin_url)
        prometheus = urlsplit(self.cfg.prometheus_url)
        for host, port, default in (("t_host", "t_port", trace), ("m_host", "m_port", prometheus)):
            if host in body or port in body:
                settings[host] = _text(body[host]) if host in body else default.hostname
                settings[port] = int(body[port]) if port in body else default.port
        return settings

    def start_collector(self, body: Mapping[str, Any] | None) -> str:
        return self._collector(collector.start_collector, **self.collector_settings(body))

    def stop_collector(self) -> str:
        return self._collector(collector.stop_collector)

    def collector_status(self) -> dict[str, Any]:
        try:
            status = collector.collector_status(self.cfg.collector_grpc)
        except collector.CollectorUnavailable as exc:
            raise _collector_error(exc) from None
        result: dict[str, Any] = MessageToDict(
            status, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        return result

    def set_visibility(self, body: Mapping[str, Any] | None) -> str:
        """Replace what visibility tracks (``/visibility/set``, ``/collector/set``)."""
        if not body:
            raise bad_request(TRACK_ONE, "services")
        try:
            check(schemas.VISIBILITY_SET, body, "Invalid value in json/yaml")
        except ApiError as exc:
            if exc.field == "services" and exc.problems and exc.problems[0].message == TRACK_ONE:
                raise bad_request(TRACK_ONE, "services", exc.problems) from None
            raise
        has_prefixes, has_suffixes = "metric_prefixes" in body, "metric_suffixes" in body
        if has_prefixes != has_suffixes:
            missing = "metric_suffixes" if has_prefixes else "metric_prefixes"
            raise invalid(
                "Invalid value in json/yaml",
                [Problem(missing, "metric_prefixes and metric_suffixes must be given together")],
            )
        stats.write_config(
            self.store,
            [item["name"] for item in body["services"]],
            [item["prefix"] for item in body["metric_prefixes"]] if has_prefixes else None,
            [item["suffix"] for item in body["metric_suffixes"]] if has_suffixes else None,
            [item["metric"] for item in body["custom_metrics"]] if "custom_metrics" in body else None,
        )
        return UPDATED

    def set_services(self, services: list[str]) -> str:
        """The dashboard's Discovered Services selection (only the services change)."""
        return self.set_visibility({"services": [{"name": s} for s in services]})

    def clear(self) -> str:
        """``/visibility/clear``: truncate the Cassandra tables, then reset every derived Redis key
        (the analytics' ``clear_published``: the original's list, docs/compatibility.md §3e, and what it forgot,
        docs/compatibility.md §11.9). If the truncate fails, Redis is left as it was."""
        message = self.truncate()
        clear_published(self.store)
        return message

    def stats(
        self, s_type: str, limit: int | None = stats.ORIGINAL_ZSET_LIMIT, source: str | None = None
    ) -> dict[str, Any]:
        if s_type not in stats.STAT_TYPES:
            raise bad_request(f"stat type {s_type!r} must be one of {', '.join(stats.STAT_TYPES)}", "s_type")
        return stats.read_stats(self.store, s_type, limit, chosen_source(source))

    def config(self, c_type: str) -> dict[str, list[str]]:
        if c_type not in stats.CONFIG_TYPES:
            raise bad_request(f"config type {c_type!r} must be one of {', '.join(stats.CONFIG_TYPES)}", "c_type")
        return stats.read_config(self.store, c_type)

    def url_stats(self, service: str, window: bool, source: str | None = None) -> dict[str, Any]:
        return stats.read_url_stats(self.store, service, window, chosen_source(source))

    def metric_values(self) -> list[tuple[str, str | None]]:
        return stats.metric_values(self.store)

    def discovered_services(self) -> list[str]:
        return stats.tracing_services(self.store)
