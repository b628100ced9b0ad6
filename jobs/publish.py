"""Turning aggregates into the Redis keys operators and CI read, and publishing them atomically.

Key names, types and formats are the original's (facts §3c–3d): counts as strings, response
times as milliseconds with two decimals or "NA", group-by counts as sets and sorted sets.
The new figures (percentiles, request counts, error rates, request rates; per service and per
service and URL; over the whole retention and over the sliding window) are new hash fields and
keys declared in clover/keys.py.

Publication never shows a reader a half-written or missing key: every collection is written
under a temporary name, then one MULTI renames them all into place (and deletes what no longer
has data).
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from clover import keys
from jobs.aggregates import Aggregate, quantile

Key = tuple[str, str]
NA = keys.NOT_AVAILABLE


@dataclass
class ResultSet:
    """Everything one run publishes, by Redis type."""

    strings: dict[str, str] = field(default_factory=dict)
    hashes: dict[str, dict[str, str]] = field(default_factory=dict)
    sets: dict[str, set[str]] = field(default_factory=dict)
    zsets: dict[str, dict[str, float]] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)

    def keys(self) -> set[str]:
        return set(self.strings) | set(self.hashes) | set(self.sets) | set(self.zsets) | set(self.lists)


def ms(value_us: float | None) -> str:
    return NA if value_us is None else f"{value_us / 1000:.2f}"


def ratio(part: int, whole: int) -> str:
    return NA if whole == 0 else f"{part / whole:.4f}"


def latency_stats(agg: Aggregate | None, seconds: float | None) -> dict[str, str]:
    """The fields of a service (or service+URL) over a period: the original's min/avg/max and the
    new percentiles, count, error rates and request rate (requests per second over ``seconds``,
    or over the span of the data when None)."""
    agg = agg or Aggregate()
    n = agg.count
    if seconds is None:
        seconds = max(1.0, ((agg.last_us or 0) - (agg.first_us or 0)) / 1_000_000) if n else 0.0
    return {
        keys.RT_MIN: ms(agg.min_us if n else None),
        keys.RT_AVG: ms(agg.sum_us / n if n else None),
        keys.RT_MAX: ms(agg.max_us if n else None),
        **{name: ms(quantile(agg.bins, q)) for name, q in keys.PERCENTILES},
        keys.REQUEST_COUNT: str(n),
        keys.ERRORS_4XX: str(agg.n4xx),
        keys.ERRORS_5XX: str(agg.n5xx),
        keys.ERROR_RATE: ratio(agg.n4xx + agg.n5xx, n),
        keys.ERROR_RATE_4XX: ratio(agg.n4xx, n),
        keys.ERROR_RATE_5XX: ratio(agg.n5xx, n),
        keys.REQUEST_RATE: NA if not n or not seconds else f"{n / seconds:.2f}",
    }


def by_kind(aggregates: Mapping[Key, Aggregate], kind: str) -> dict[str, Aggregate]:
    return {key: agg for (k, key), agg in aggregates.items() if k == kind and agg.count > 0}


def own_service(name: str, service_h: str) -> bool:
    """A span's service is the tracked one: the same name, or it qualified by namespace."""
    return name == service_h or name.startswith(service_h + ".")


def service_figures(
    aggregates: Mapping[Key, Aggregate], service_h: str, seconds: float | None
) -> tuple[dict[str, str], dict[str, str]]:
    """(hash fields of the service, {url: JSON of its figures}) over ``aggregates``."""
    total = Aggregate()
    for name, agg in by_kind(aggregates, "svc").items():
        if own_service(name, service_h):
            total.add(agg)
    per_url: dict[str, Aggregate] = defaultdict(Aggregate)
    for pair, agg in by_kind(aggregates, "svc_url").items():
        name, url = json.loads(pair)
        if own_service(name, service_h):
            per_url[url].add(agg)
    urls = {url: json.dumps(latency_stats(agg, seconds), sort_keys=True) for url, agg in per_url.items()}
    return latency_stats(total, seconds), urls


def split_pair(pair: str) -> tuple[str, str]:
    first, second = json.loads(pair)
    return str(first), str(second)


def tracked(store: redis.Redis, key: str) -> list[str]:
    return sorted(store.smembers(key))  # type: ignore[arg-type]


def metric_history(db: Any, name: str) -> list[str]:
    """The last 100 values of a metric, oldest first; several series at one time are summed."""
    rows = db.execute("SELECT monitor_time, m_value FROM metrics WHERE m_name = %s LIMIT 2000", (name,))
    at: dict[Any, list[str]] = defaultdict(list)
    for row in rows:
        at[row.monitor_time].append(row.m_value)
    latest = sorted(at)[-keys.METRICS_HISTORY_LENGTH :]
    values = []
    for moment in latest:
        samples = at[moment]
        try:
            values.append(samples[0] if len(samples) == 1 else repr(sum(float(v) for v in samples)))
        except ValueError:
            values.append(samples[0])
    return values


def build_results(
    store: redis.Redis,
    db: Any,
    totals: Mapping[Key, Aggregate],
    window: Mapping[Key, Aggregate],
    window_s: int,
) -> ResultSet:
    """Every key of one publication, from the running totals and the window's aggregate."""
    results = ResultSet()
    count = {kind: totals.get((kind, ""), Aggregate()).count for kind in ("spans", "traces", "metrics")}
    results.strings = {
        keys.SPAN_COUNT: str(count["spans"]),
        keys.TRACE_COUNT: str(count["traces"]),
        keys.METRIC_COUNT: str(count["metrics"]),
    }
    services = [keys.hyphen(s) for s in tracked(store, keys.VISIBILITY_SERVICES)]
    for service in services:
        fields, urls = service_figures(totals, service, None)
        window_fields, window_urls = service_figures(window, service, float(window_s))
        results.hashes[keys.service_stats(service)] = fields
        results.hashes[keys.url_stats(service)] = urls
        results.hashes[keys.service_window(service)] = window_fields
        results.hashes[keys.url_window_stats(service)] = window_urls
    for kind, set_key, zset_key in (
        ("url", keys.SPAN_URLS, keys.SPAN_URLS_Z),
        ("ua", keys.SPAN_USER_AGENT, keys.SPAN_USER_AGENT_Z),
        ("node", keys.SPAN_NODE_ID, keys.SPAN_NODE_ID_Z),
    ):
        counts = by_kind(totals, kind)
        results.sets[set_key] = set(counts)
        results.zsets[zset_key] = {k: float(a.count) for k, a in counts.items()}
    results.zsets[keys.SPAN_STATUS_CODES_Z] = {
        keys.status_url_member(*split_pair(k)): float(a.count) for k, a in by_kind(totals, "status_url").items()
    }
    results.zsets[keys.SPAN_NODE_URL_Z] = {
        keys.node_url_member(*split_pair(k)): float(a.count) for k, a in by_kind(totals, "node_url").items()
    }
    for kind, set_key in (
        ("op", keys.SPAN_OPERATION_NAME),
        ("upstream", keys.SPAN_UPSTREAM_CLUSTER),
        ("status", keys.SPAN_STATUS_CODE),
    ):
        results.sets[set_key] = set(by_kind(totals, kind))
    prefixes = tracked(store, keys.METRIC_PREFIXES)
    suffixes = tracked(store, keys.METRIC_SUFFIXES)
    for service in services:
        for prefix in prefixes:
            for suffix in suffixes:
                name = keys.metric_value(prefix, service, suffix)
                results.lists[keys.METRICS_HISTORY_PREFIX + name] = metric_history(db, name)
    return results


class Publisher:
    """Publishes a ResultSet so that readers see the previous set or the new one, never a mix."""

    def __init__(self, store: redis.Redis):
        self.store = store

    def publish(self, results: ResultSet) -> None:
        run = uuid.uuid4().hex[:12]

        def tmp(key: str) -> str:
            return f"{keys.PUBLISH_TMP_PREFIX}{run}:{key}"

        staged: list[str] = []
        empty: list[str] = []
        with self.store.pipeline(transaction=False) as pipe:
            for key, mapping in results.hashes.items():
                if mapping:
                    pipe.hset(tmp(key), mapping=mapping)
            for key, members in results.sets.items():
                if members:
                    pipe.sadd(tmp(key), *members)
            for key, scores in results.zsets.items():
                if scores:
                    pipe.zadd(tmp(key), scores)
            for key, values in results.lists.items():
                if values:
                    pipe.rpush(tmp(key), *values)
            for key in _collections(results):
                (staged if _has_data(results, key) else empty).append(key)
                pipe.expire(tmp(key), 300)  # left behind only if the publication dies half-way
            pipe.execute()
        previous = set(self.store.smembers(keys.PUBLISHED_KEYS))  # type: ignore[arg-type]
        current = results.keys()
        with self.store.pipeline(transaction=True) as tx:
            for key, value in results.strings.items():
                tx.set(key, value)
            for key in staged:
                tx.rename(tmp(key), key)
                tx.persist(key)
            for key in empty:
                tx.delete(key)
            for key in previous - current:
                tx.delete(key)
            tx.delete(keys.PUBLISHED_KEYS)
            tx.sadd(keys.PUBLISHED_KEYS, *sorted(current))
            tx.execute()


def _collections(results: ResultSet) -> Iterable[str]:
    yield from results.hashes
    yield from results.sets
    yield from results.zsets
    yield from results.lists


def _has_data(results: ResultSet, key: str) -> bool:
    for group in (results.hashes, results.sets, results.zsets, results.lists):
        if key in group:
            return bool(group[key])
    return False


def clear_published(store: redis.Redis) -> None:
    """Reset what the analytics and the collector derived, in one transaction: the original's
    /visibility/clear (facts §3e: counts to 0, the span sets and sorted sets deleted, each tracked
    service's min/avg/max to "NA") and what it forgot (§11.9): the metric histories and latest
    values, and every other key the analytics published (window and per-URL figures)."""
    services = tracked(store, keys.VISIBILITY_SERVICES)
    metric_names = [
        keys.metric_value(p, s, x)
        for s in services
        for p in tracked(store, keys.METRIC_PREFIXES)
        for x in tracked(store, keys.METRIC_SUFFIXES)
    ] + tracked(store, keys.CUSTOM_METRICS)
    published = set(store.smembers(keys.PUBLISHED_KEYS))  # type: ignore[arg-type]
    leftovers = list(store.scan_iter(match=f"{keys.PUBLISH_TMP_PREFIX}*"))
    doomed = (
        set(keys.CLEARED_SETS_AND_ZSETS)
        | published
        | set(metric_names)
        | {keys.METRICS_HISTORY_PREFIX + name for name in metric_names}
        | set(leftovers)
    ) - set(keys.SYSTEM_COUNTS)
    with store.pipeline(transaction=True) as tx:
        for key in keys.SYSTEM_COUNTS:
            tx.set(key, "0")
        if doomed:
            tx.delete(*sorted(doomed))
        for service in services:
            tx.hset(keys.service_stats(service), mapping={field: NA for field in keys.RT_FIELDS})
        tx.delete(keys.PUBLISHED_KEYS)
        tx.execute()
