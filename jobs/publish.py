"""Turning aggregates into the Redis keys operators and CI read, and publishing them atomically.

Key names, types and formats are the original's (docs/compatibility.md §3c–3d): counts as strings, response
times as milliseconds with two decimals or "NA", group-by counts (of spans) as sets and sorted
sets. The figures of each tracked service (clover/figures.py; per service and per service and
URL; over the whole retention and over the sliding window) are new hash fields and keys
declared in clover/keys.py.

A service's figures count each of its requests once: its requests as one source measured them,
the source that saw the most of them in the period (ties: the application's tracer before the
network's), named in the ``source`` field; every source's own figures are published beside them.

Publication never shows a reader a half-written or missing key: every collection is written
under a temporary name, then one MULTI renames them all into place (and deletes what no longer
has data), and only while the run still holds the visibility lease.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from clover import figures, keys
from clover.lease import Lease, LeaseLost, visibility_cleared
from jobs import kinds
from jobs.aggregates import Aggregate
from jobs.kinds import AggregateKey

NA = keys.NOT_AVAILABLE
Aggregates = Mapping[AggregateKey, Aggregate]


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


def by_kind(aggregates: Aggregates, kind: kinds.Kind) -> dict[tuple[str, ...], Aggregate]:
    return {key: agg for (k, key), agg in aggregates.items() if k == kind.name and agg.count > 0}


def own_service(name: str, service_h: str) -> bool:
    """A span's service is the tracked one: the same name, or it qualified by namespace."""
    return name == service_h or name.startswith(service_h + ".")


def requests_by_source(aggregates: Aggregates, service_h: str) -> dict[str, Aggregate]:
    """The service's requests over ``aggregates``, one aggregate per source."""
    found: dict[str, Aggregate] = defaultdict(Aggregate)
    for (name, source), agg in by_kind(aggregates, kinds.REQUESTS).items():
        if own_service(name, service_h):
            found[source].add(agg)
    return found


def url_requests_by_source(aggregates: Aggregates, service_h: str) -> dict[str, dict[str, Aggregate]]:
    """The service's requests per URL (path and query), by source."""
    found: dict[str, dict[str, Aggregate]] = defaultdict(lambda: defaultdict(Aggregate))
    for (name, source, url), agg in by_kind(aggregates, kinds.URL_REQUESTS).items():
        if own_service(name, service_h):
            found[source][url].add(agg)
    return found


def headline_source(per_source: Mapping[str, Aggregate]) -> str | None:
    """The source a service's figures come from: the one that saw the most of its requests,
    ties going to the earlier in figures.SOURCES (the application's tracer before the network)."""
    rank = {s: i for i, s in enumerate(figures.SOURCES)}
    return max(per_source, key=lambda s: (per_source[s].count, -rank.get(s, len(rank)), s), default=None)


def seconds_of_data(agg: Aggregate) -> float | None:
    """The whole retention's period: from the first request to the last (at least 1 s)."""
    if not agg.count:
        return None
    return max(1.0, ((agg.last_us or 0) - (agg.first_us or 0)) / 1_000_000)


@dataclass(frozen=True)
class Window:
    """The sliding window: its start and end (µs). A rate over it counts from the window's start
    or from the first request ever seen, whichever is later (a service younger than the window
    is not diluted by the time before it existed)."""

    start_us: int
    end_us: int

    def seconds(self, first_ever_us: int | None) -> float:
        start = max(self.start_us, first_ever_us or self.start_us)
        return max(1.0, (self.end_us - start) / 1_000_000)


def _whole(found: Mapping[str, Aggregate], key: str, source: str | None) -> dict[str, str]:
    """The figures of ``found[key]`` over the whole retention."""
    agg = found.get(key)
    seconds = seconds_of_data(agg) if agg is not None else None
    return figures.publish(figures.Period(agg or Aggregate(), seconds, source))


def _recent(found: Mapping[str, Aggregate], ever: Mapping[str, Aggregate], key: str, source: str | None,
            window: Window) -> dict[str, str]:  # fmt: skip
    """The figures of ``found[key]`` over the window (``ever``: the whole retention's, for its first request)."""
    agg, first = found.get(key), ever[key].first_us if key in ever else None
    seconds = window.seconds(first) if agg is not None else None
    return figures.publish(figures.Period(agg or Aggregate(), seconds, source))


def service_hashes(totals: Aggregates, window: Aggregates, span: Window, service: str) -> dict[str, dict[str, str]]:
    """Every hash of one tracked service: its figures and per-URL figures, whole retention and
    window, from its headline source and from each source apart."""
    whole, recent = requests_by_source(totals, service), requests_by_source(window, service)
    whole_urls, recent_urls = url_requests_by_source(totals, service), url_requests_by_source(window, service)
    choices: list[tuple[str | None, str, str]] = [(None, headline_source(whole) or "", headline_source(recent) or "")]
    choices += [(s, s, s) for s in sorted(set(whole) | set(recent))]
    hashes: dict[str, dict[str, str]] = {}
    for named, whole_source, recent_source in choices:
        hashes[keys.service_stats(service, named)] = _whole(whole, whole_source, whole_source)
        hashes[keys.service_window(service, named)] = _recent(recent, whole, recent_source, recent_source, span)
        urls = whole_urls.get(whole_source, {})
        hashes[keys.url_stats(service, named)] = {u: _json(_whole(urls, u, whole_source)) for u in urls}
        urls, ever = recent_urls.get(recent_source, {}), whole_urls.get(recent_source, {})
        hashes[keys.url_window_stats(service, named)] = {
            u: _json(_recent(urls, ever, u, recent_source, span)) for u in urls
        }
    return hashes


def _json(fields: Mapping[str, str]) -> str:
    return json.dumps(fields, sort_keys=True)


def tracked(store: redis.Redis, key: str) -> list[str]:
    return sorted(m.decode() if isinstance(m, bytes) else m for m in store.smembers(key))


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
    store: redis.Redis, db: Any, totals: Aggregates, window: Aggregates, window_start_us: int, now_us: int
) -> ResultSet:
    """Every key of one publication, from the running totals and the window's aggregate."""
    results = ResultSet()
    results.strings = {
        keys.SPAN_COUNT: str(_count(totals, kinds.SPANS)),
        keys.TRACE_COUNT: str(_count(totals, kinds.TRACES)),
        keys.METRIC_COUNT: str(_count(totals, kinds.METRICS)),
    }
    services = [keys.hyphen(s) for s in tracked(store, keys.VISIBILITY_SERVICES)]
    span = Window(window_start_us, now_us)
    for service in services:
        results.hashes.update(service_hashes(totals, window, span, service))
    for kind, set_key, zset_key in (
        (kinds.URL, keys.SPAN_URLS, keys.SPAN_URLS_Z),
        (kinds.AGENT, keys.SPAN_USER_AGENT, keys.SPAN_USER_AGENT_Z),
        (kinds.NODE, keys.SPAN_NODE_ID, keys.SPAN_NODE_ID_Z),
    ):
        counts = {value: agg.count for (value,), agg in by_kind(totals, kind).items()}
        results.sets[set_key] = set(counts)
        results.zsets[zset_key] = {k: float(n) for k, n in counts.items()}
    results.zsets[keys.SPAN_STATUS_CODES_Z] = {
        keys.status_url_member(*key): float(a.count) for key, a in by_kind(totals, kinds.STATUS_URL).items()
    }
    results.zsets[keys.SPAN_NODE_URL_Z] = {
        keys.node_url_member(*key): float(a.count) for key, a in by_kind(totals, kinds.NODE_URL).items()
    }
    for kind, set_key in (
        (kinds.OPERATION, keys.SPAN_OPERATION_NAME),
        (kinds.UPSTREAM, keys.SPAN_UPSTREAM_CLUSTER),
        (kinds.STATUS, keys.SPAN_STATUS_CODE),
    ):
        results.sets[set_key] = {value for (value,) in by_kind(totals, kind)}
    prefixes = tracked(store, keys.METRIC_PREFIXES)
    suffixes = tracked(store, keys.METRIC_SUFFIXES)
    for service in services:
        for prefix in prefixes:
            for suffix in suffixes:
                name = keys.metric_value(prefix, service, suffix)
                results.lists[keys.METRICS_HISTORY_PREFIX + name] = metric_history(db, name)
    return results


def _count(aggregates: Aggregates, kind: kinds.Kind) -> int:
    found = aggregates.get(kind.key())
    return found.count if found else 0


class Publisher:
    """Publishes a ResultSet so that readers see the previous set or the new one, never a mix."""

    def __init__(self, store: redis.Redis):
        self.store = store

    def publish(self, results: ResultSet, lease: Lease | None = None) -> None:
        """Stage every collection, then swap them all in with one MULTI; with ``lease``, only while
        the lease is still ours (LeaseLost otherwise, and nothing changes)."""
        run = uuid.uuid4().hex[:12]

        def tmp(key: str) -> str:
            return f"{keys.PUBLISH_TMP_PREFIX}{run}:{key}"

        staged: list[str] = []
        empty: list[str] = []
        with self.store.pipeline(transaction=False) as pipe:
            for key, mapping in results.hashes.items():
                if mapping:
                    pipe.hset(tmp(key), mapping=mapping)  # type: ignore[arg-type]  # redis-py: Mapping key is invariant
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
        current = results.keys()
        with self.store.pipeline(transaction=True) as tx:
            watched = [keys.PUBLISHED_KEYS, *([lease.key] if lease else [])]
            tx.watch(*watched)  # type: ignore[no-untyped-call]  # redis-py's Pipeline.watch is unannotated
            if lease is not None and not lease.holds(tx.get(lease.key)):
                raise LeaseLost(f"lost the lease {lease.key} before publishing")
            previous = set(tx.smembers(keys.PUBLISHED_KEYS))
            tx.multi()
            for key, value in results.strings.items():
                tx.set(key, value)
            for key in staged:
                tx.rename(tmp(key), key)
                tx.persist(key)
            for key in empty:
                tx.delete(key)
            for stale in previous - current:
                tx.delete(stale)
            tx.delete(keys.PUBLISHED_KEYS)
            tx.sadd(keys.PUBLISHED_KEYS, *sorted(current))
            try:
                tx.execute()
            except redis.WatchError:
                raise LeaseLost(f"the lease or {keys.PUBLISHED_KEYS} changed while publishing") from None


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
    /visibility/clear (docs/compatibility.md §3e: counts to 0, the span sets and sorted sets deleted, each tracked
    service's min/avg/max to "NA") and what it forgot (docs/compatibility.md §11.9): the metric histories and latest
    values, and every other key the analytics published (window and per-URL figures)."""
    with visibility_cleared(store, keys.VISIBILITY_LEASE, keys.VISIBILITY_CLEAR_REQUESTED):
        _clear_published(store)


def _clear_published(store: redis.Redis) -> None:
    services = tracked(store, keys.VISIBILITY_SERVICES)
    metric_names = [
        keys.metric_value(p, s, x)
        for s in services
        for p in tracked(store, keys.METRIC_PREFIXES)
        for x in tracked(store, keys.METRIC_SUFFIXES)
    ] + tracked(store, keys.CUSTOM_METRICS)
    published = set(store.smembers(keys.PUBLISHED_KEYS))
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
