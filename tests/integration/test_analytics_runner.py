"""The long-running analytics (``cloverctl local up analytics``) against the real stack: it runs
only while the collector is started, and a run killed at any point leaves nothing half-applied:
after restarts, its figures equal those of a fresh full recompute over the same rows."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from clover import keys
from clover.config import Config
from collector import client as collector
from jobs.publish import clear_published
from stack.launcher import Launcher
from tests.integration.analytics_support import (
    kill_tree,
    published,
    recompute_from_scratch,
    reports_after,
    reset_visibility,
    spans_over,
)
from tests.integration.visibility_seed import seed
from tests.waiting import wait_until

pytestmark = pytest.mark.spark

SERVICES = ("svc-a", "svc-b")


@pytest.fixture
def fresh(stack: Launcher, cfg: Config, cassandra: Any, store: redis.Redis) -> Iterator[Launcher]:
    reset_visibility(stack, cassandra, store, SERVICES)
    yield stack
    stack.down(["analytics", "collector"])


def test_the_analytics_runs_only_while_the_collector_is_started(
    fresh: Launcher, cfg: Config, cassandra: Any, store: redis.Redis
) -> None:
    bucket_us = cfg.bucket_seconds * 1_000_000
    seed(cassandra, spans_over(3, int(time.time() * 1_000_000), bucket_us, "idle"), cfg.bucket_seconds)
    fresh.up(["analytics"])
    report = reports_after(cfg, 3)  # never started: StartCollector has not set the flag
    assert (report["enabled"], report["runs"]) == (False, 0)
    assert store.get(keys.SPAN_COUNT) is None

    store.set(keys.ANALYTICS_ENABLED, "1")  # what StartCollector does
    wait_until(lambda: store.get(keys.SPAN_COUNT) == "9", 120, 0.5, "the first publication")
    store.set(keys.ANALYTICS_ENABLED, "0")  # StopCollector
    report = reports_after(cfg, 2)
    assert report["enabled"] is False
    runs = report["runs"]
    seed(cassandra, spans_over(2, int(time.time() * 1_000_000), bucket_us, "stopped"), cfg.bucket_seconds)
    report = reports_after(cfg, 4)
    assert (report["runs"], store.get(keys.SPAN_COUNT)) == (runs, "9")


class Watch:
    """Reads span_count every 20 ms in the background: every value it had while watched."""

    def __init__(self, store: redis.Redis):
        self.store = store
        self.counts: set[str | None] = set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch)

    def _watch(self) -> None:
        while not self._done.wait(0.02):
            self.counts.add(self.store.get(keys.SPAN_COUNT))  # type: ignore[arg-type]

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()


def clear_visibility(cfg: Config, store: redis.Redis) -> None:
    """The controller's clear: the collector truncates the tables, then the derived keys are reset."""
    assert collector.truncate_visibility(cfg.collector_grpc) == "Truncated visibility tables"
    clear_published(store)


def test_a_run_killed_at_random_points_leaves_the_figures_of_a_full_recompute(
    fresh: Launcher, cfg: Config, cassandra: Any, store: redis.Redis
) -> None:
    rng = random.Random(int(os.environ.get("CLOVER_TEST_SEED", "18")))
    bucket_us = cfg.bucket_seconds * 1_000_000
    spans = spans_over(120, int(time.time() * 1_000_000), bucket_us, "k0-")  # three Spark steps of 50 buckets
    seed(cassandra, spans, cfg.bucket_seconds)
    store.set(keys.ANALYTICS_ENABLED, "1")
    kills = 0
    for round_ in range(1, 4):
        fresh.up(["analytics"])
        process = fresh.process("analytics")
        assert process is not None
        time.sleep(rng.uniform(2.0, 14.0))  # somewhere in start-up, a run's reads, its writes or its publication
        more = spans_over(4, int(time.time() * 1_000_000), bucket_us, f"k{round_}-")
        seed(cassandra, more, cfg.bucket_seconds)
        spans += more
        kill_tree(process)
        kills += 1
    fresh.up(["analytics"])
    wait_until(lambda: store.get(keys.SPAN_COUNT) == str(len(spans)), 300, 1.0, f"all {len(spans)} spans counted")
    reports_after(cfg, 3)
    fresh.down(["analytics"])
    after_kills = published(store)
    assert kills == 3 and after_kills[keys.service_stats("svc-a")]["request_count"] == str(
        sum(1 for s in spans if s.service == "svc-a")
    )
    recompute_from_scratch(cfg, cassandra)
    assert published(store) == after_kills


def test_a_clear_while_runs_are_in_flight_brings_no_figure_back(
    fresh: Launcher, cfg: Config, cassandra: Any, store: redis.Redis
) -> None:
    rng = random.Random(int(os.environ.get("CLOVER_TEST_SEED", "18")))
    bucket_us = cfg.bucket_seconds * 1_000_000
    spans = spans_over(60, int(time.time() * 1_000_000), bucket_us, "c0-")
    seed(cassandra, spans, cfg.bucket_seconds)
    store.set(keys.ANALYTICS_ENABLED, "1")
    fresh.up(["collector", "analytics"])
    wait_until(lambda: store.get(keys.SPAN_COUNT) == str(len(spans)), 300, 0.5, "the first publication")
    for round_ in range(1, 4):
        more = spans_over(60, int(time.time() * 1_000_000), bucket_us, f"c{round_}-")
        seed(cassandra, more, cfg.bucket_seconds)  # the next run recomputes 60 buckets
        time.sleep(rng.uniform(0.0, 4.0))
        clear_visibility(cfg, store)  # what /visibility/clear does
        assert (store.get(keys.SPAN_COUNT), store.hgetall(keys.service_stats("svc-a"))) == (
            "0", {keys.RT_MIN: "NA", keys.RT_AVG: "NA", keys.RT_MAX: "NA"}
        ), round_  # fmt: skip
        with Watch(store) as seen:  # runs go on: nothing from before the clear may come back, even briefly
            report = reports_after(cfg, 4)
        assert report["enabled"] is True
        assert seen.counts == {"0"}, round_
        assert store.hget(keys.service_stats("svc-a"), "request_count") in (None, "0"), round_
