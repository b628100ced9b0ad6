"""Starting visibility for an end-to-end test: empty tables and keys, services tracked, the
collector reading the trace backend from now on, and the figures Redis then shows."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import redis

from clover import keys
from clover.config import Config
from collector import client as collector
from collector.worker import OVERLAP_SECONDS
from jobs.publish import clear_published


def collect_from_now(cfg: Config, store: redis.Redis, services: Iterable[str]) -> None:
    """Truncate, clear and track ``services``; start the collector at the current time, so traffic
    sent before stays out of the counts."""
    assert collector.truncate_visibility(cfg.collector_grpc) == "Truncated visibility tables"
    clear_published(store)
    tracked = [keys.underscore(s) for s in services]
    start_us = int((time.time() + OVERLAP_SECONDS) * 1_000_000)
    with store.pipeline(transaction=True) as tx:
        tx.delete(keys.VISIBILITY_SERVICES, keys.COLLECTOR_WATERMARKS)
        tx.sadd(keys.VISIBILITY_SERVICES, *tracked)
        tx.hset(keys.COLLECTOR_WATERMARKS, mapping={keys.hyphen(s): start_us for s in tracked})
        tx.execute()
    if collector.collector_status(cfg.collector_grpc).running:
        collector.stop_collector(cfg.collector_grpc)
    assert collector.start_collector(cfg.collector_grpc, sinterval=2).startswith("Started collector on pid:")


def figures_of(store: redis.Redis, service: str, source: str | None = None) -> dict[str, str]:
    return store.hgetall(keys.service_stats(service, source))  # type: ignore[return-value]


def url_counts(store: redis.Redis, service: str, source: str | None = None) -> dict[str, int]:
    """Requests per URL (path and query) of a service, from its per-URL figures."""
    published: dict[str, Any] = store.hgetall(keys.url_stats(service, source))  # type: ignore[assignment]
    return {url: int(json.loads(text)["request_count"]) for url, text in published.items()}


def requests_counted(store: redis.Redis, expected: dict[str, int], sources: Iterable[str | None]) -> bool:
    """Whether every service shows exactly its expected requests, for every one of ``sources``."""
    return all(
        figures_of(store, service, source).get("request_count") == str(count)
        for service, count in expected.items()
        for source in sources
    )


def edge_counts(store: redis.Redis, source: str | None = None) -> dict[str, int]:
    """Requests per graph edge ("<caller> -> <callee>") as ``source`` (default: each edge's main one) saw them."""
    published: dict[str, Any] = store.hgetall(keys.graph(source=source))  # type: ignore[assignment]
    return {edge: int(json.loads(text)["request_count"]) for edge, text in published.items()}
