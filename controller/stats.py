"""Reading and writing the visibility keys in Redis (docs/compatibility.md §3, §5a): what the REST routes and the
dashboard show, in the shapes the original's JSON had.

Every read is a pipeline (two round trips for a full stats read), so a dashboard refresh over
50 services and 1,000 URLs stays cheap. Config writes are one MULTI: a reader sees the old or
the new configuration, never an empty set in between.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from clover import figures, keys

ORIGINAL_ZSET_LIMIT = 51  # the original's ZRANGE 0 50
STAT_TYPES = ("system", "metrics", "tracing", "all")
CONFIG_TYPES = ("services", "metrics", "all")

# (JSON name, Redis set) of the distinct-value lists, and (JSON name, Redis zset) of the counts.
TRACING_SETS = (
    ("request_urls", keys.SPAN_URLS),
    ("user_agents", keys.SPAN_USER_AGENT),
    ("status_codes", keys.SPAN_STATUS_CODE),
    ("op_names", keys.SPAN_OPERATION_NAME),
    ("node_ids", keys.SPAN_NODE_ID),
    ("upstream_clusters", keys.SPAN_UPSTREAM_CLUSTER),
)
TRACING_ZSETS = (
    ("user_agent_count", keys.SPAN_USER_AGENT_Z),
    ("request_url_count", keys.SPAN_URLS_Z),
    ("status_code_count", keys.SPAN_STATUS_CODES_Z),
    ("node_url_count", keys.SPAN_NODE_URL_Z),
    ("node_id_count", keys.SPAN_NODE_ID_Z),
)


def connect(url: str, *, decode: bool = True) -> redis.Redis:
    """A client with a connection pool and short timeouts (a dead Redis answers in seconds, not minutes)."""
    return redis.Redis.from_url(url, decode_responses=decode, socket_timeout=5, socket_connect_timeout=3)


def _members(value: Any) -> list[str]:
    return sorted(value or ())


def _zset_command(pipe: Any, key: str, limit: int | None) -> None:
    if limit is None:
        pipe.zrange(key, 0, -1, withscores=True)
    else:
        pipe.zrevrange(key, 0, limit - 1, withscores=True)


def _zset_rows(value: Any, limit: int | None) -> list[list[Any]]:
    """``[[member, score], ...]`` ascending by score, as the original's ZRANGE ... WITHSCORES.

    With a limit, these are the ``limit`` highest counts (the original took the lowest 51,
    which hid the busiest URLs once there were more than 51)."""
    rows = [[member, score] for member, score in value or ()]
    if limit is not None:
        rows.reverse()
    return rows


@dataclass(frozen=True)
class Tracked:
    """What visibility tracks: services (underscore form) and metric name parts."""

    services: list[str]
    prefixes: list[str]
    suffixes: list[str]
    custom: list[str]


def read_tracked(store: redis.Redis) -> Tracked:
    with store.pipeline(transaction=False) as pipe:
        for key in (keys.VISIBILITY_SERVICES, keys.METRIC_PREFIXES, keys.METRIC_SUFFIXES, keys.CUSTOM_METRICS):
            pipe.smembers(key)
        services, prefixes, suffixes, custom = pipe.execute()
    return Tracked(_members(services), _members(prefixes), _members(suffixes), _members(custom))


def read_config(store: redis.Redis, c_type: str) -> dict[str, list[str]]:
    """``/visibility/get/<c_type>``: services, metrics or all."""
    tracked = read_tracked(store)
    out: dict[str, list[str]] = {}
    if c_type in ("services", "all"):
        out["visibility_services"] = tracked.services
    if c_type in ("metrics", "all"):
        out["metric_prefixes"] = tracked.prefixes
        out["metric_suffixes"] = tracked.suffixes
        out["custom_metrics"] = tracked.custom
    return out


def metric_names(tracked: Tracked) -> list[tuple[str, str, str]]:
    """(service, prefix, suffix) of every tracked Prometheus name, in order."""
    return [(s, p, x) for s in tracked.services for p in tracked.prefixes for x in tracked.suffixes]


def read_stats(
    store: redis.Redis, s_type: str, limit: int | None = ORIGINAL_ZSET_LIMIT, source: str | None = None
) -> dict[str, Any]:
    """``/visibility/get/stats/<s_type>`` (system, metrics, tracing or all).

    ``limit`` caps each ``*_count`` list to its highest counts; None returns them whole. With
    ``source``, the services' figures are those that source measured (clover/figures.SOURCES)."""
    want_system = s_type in ("system", "all")
    want_metrics = s_type in ("metrics", "all")
    want_tracing = s_type in ("tracing", "all")
    out: dict[str, Any] = {}
    with store.pipeline(transaction=False) as pipe:
        for key in (keys.VISIBILITY_SERVICES, keys.METRIC_PREFIXES, keys.METRIC_SUFFIXES, keys.CUSTOM_METRICS):
            pipe.smembers(key)
        if want_system:
            for key in keys.SYSTEM_COUNTS:
                pipe.get(key)
        if want_tracing:
            for _, key in TRACING_SETS:
                pipe.smembers(key)
            for _, key in TRACING_ZSETS:
                _zset_command(pipe, key, limit)
        first = iter(pipe.execute())
    tracked = Tracked(*(_members(next(first)) for _ in range(4)))
    if want_system:
        for key in keys.SYSTEM_COUNTS:
            out[key] = next(first)
    tracing: dict[str, Any] = {}
    if want_tracing:
        for name, _ in TRACING_SETS:
            tracing[name] = _members(next(first))
        for name, _ in TRACING_ZSETS:
            tracing[name] = _zset_rows(next(first), limit)
    combos = metric_names(tracked) if want_metrics else []
    with store.pipeline(transaction=False) as pipe:
        if want_tracing:
            for service in tracked.services:
                pipe.hgetall(keys.service_stats(service, source))
                pipe.hgetall(keys.service_window(service, source))
        for service, prefix, suffix in combos:
            pipe.lrange(keys.metric_history(prefix, service, suffix), 0, keys.METRICS_HISTORY_LENGTH)
        second = iter(pipe.execute())
    if want_tracing:
        times = []
        for service in tracked.services:
            whole, window = next(second), next(second)
            times.append(
                {"name": keys.hyphen(service), **figures.by_json_name(whole), "window": figures.by_json_name(window)}
            )
        out["response_times"] = times
        out.update(tracing)
    if want_metrics:
        out["metrics_time"] = [
            {
                "name": keys.metric_history(prefix, service, suffix),
                "service": service,
                "prefix": prefix,
                "suffix": suffix,
                "values": next(second),
            }
            for service, prefix, suffix in combos
        ]
    return out


def read_url_stats(
    store: redis.Redis, service: str, window: bool = False, source: str | None = None
) -> dict[str, dict[str, Any]]:
    """Per-URL figures of one service (JSON names), over the whole retention or the window, as its
    headline source or ``source`` measured them."""
    key = keys.url_window_stats(service, source) if window else keys.url_stats(service, source)
    out: dict[str, dict[str, Any]] = {}
    for url, text in sorted(store.hgetall(key).items()):
        try:
            out[url] = figures.by_json_name(json.loads(text))  # type: ignore[index]  # a decoding client: str keys
        except ValueError:
            continue
    return out


def metric_values(store: redis.Redis, tracked: Tracked | None = None) -> list[tuple[str, str | None]]:
    """(name, latest value) of every tracked Prometheus name and custom metric."""
    tracked = tracked or read_tracked(store)
    names = [keys.metric_value(p, s, x) for s, p, x in metric_names(tracked)] + tracked.custom
    if not names:
        return []
    values = store.mget(names)
    return list(zip(names, values, strict=True))  # type: ignore[arg-type]  # a decoding client: str values


def tracing_services(store: redis.Redis) -> list[str]:
    """Services the trace backend knows ("Discovered Services"), hyphen form."""
    return _members(store.smembers(keys.TRACING_SERVICES))


def write_config(
    store: redis.Redis,
    services: Iterable[str],
    prefixes: Iterable[str] | None = None,
    suffixes: Iterable[str] | None = None,
    custom: Iterable[str] | None = None,
) -> None:
    """Replace the tracked services (stored underscore form); prefixes and suffixes, custom
    metrics too when given. One MULTI."""
    with store.pipeline(transaction=True) as tx:
        _replace(tx, keys.VISIBILITY_SERVICES, [keys.underscore(s) for s in services])
        if prefixes is not None and suffixes is not None:
            _replace(tx, keys.METRIC_PREFIXES, list(prefixes))
            _replace(tx, keys.METRIC_SUFFIXES, list(suffixes))
        if custom is not None:
            _replace(tx, keys.CUSTOM_METRICS, list(custom))
        tx.execute()


def _replace(tx: Any, key: str, members: list[str]) -> None:
    tx.delete(key)
    if members:
        tx.sadd(key, *members)


SNORT_SHOWN_FIELDS = (
    "event-id",
    "event-second",
    "event-microsecond",
    "signature-id",
    "generator-id",
    "signature-revision",
    "classification-id",
    "priority",
    "source-ip",
    "destination-ip",
    "sport-itype",
    "dport-icode",
    "protocol",
    "blocked",
    "msg",
    "classtype",
    "trace-id",
)


def _event_order(event_id: str) -> tuple[int, str]:
    return (int(event_id), "") if event_id.isdigit() else (-1, event_id)


def recent_alerts(raw: redis.Redis, limit: int = 20) -> tuple[int, list[dict[str, str]]]:
    """(number of alerts, the ``limit`` newest as dicts of their readable fields)."""
    members = raw.smembers(keys.SNORT_EVENTS)
    ids = sorted((i.decode(errors="replace") for i in members), key=_event_order)  # type: ignore[union-attr]  # raw: bytes
    newest = list(reversed(ids))[: max(0, limit)]
    with raw.pipeline(transaction=False) as pipe:
        for event_id in newest:
            pipe.hmget(keys.snort_event(event_id), SNORT_SHOWN_FIELDS)
        rows = pipe.execute()
    alerts = []
    for event_id, values in zip(newest, rows, strict=True):
        alert = {
            name: value.decode(errors="replace")
            for name, value in zip(SNORT_SHOWN_FIELDS, values, strict=True)
            if value is not None
        }
        alert.setdefault("event-id", event_id)
        alerts.append(alert)
    return len(ids), alerts
