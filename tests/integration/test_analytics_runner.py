"""The long-running analytics (``cloverctl local up analytics``) against the real stack: it runs
only while the collector is started, and a run killed at any point leaves nothing half-applied:
after restarts, its figures equal those of a fresh full recompute over the same rows."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import redis

from clover import keys, schema
from clover.config import CHECKOUT_DIR, Config
from collector import client as collector
from jobs.publish import clear_published
from jobs.state import DERIVED_TABLES
from jobs.status import analytics_status_file as status_file
from jobs.status import read_report
from stack.launcher import Launcher
from tests.integration.visibility_seed import INBOUND, SeedSpan, seed
from tests.waiting import wait_until

pytestmark = pytest.mark.spark

SERVICES = ("svc-a", "svc-b")


def spans_over(buckets: int, now_us: int, bucket_us: int, tag: str) -> list[SeedSpan]:
    """Three spans (two requests of svc-a, one of svc-b) in each of ``buckets`` buckets before now."""
    first = (now_us - (buckets + 2) * bucket_us) // bucket_us * bucket_us
    spans = []
    for b in range(buckets):
        start = first + b * bucket_us
        for i, service in enumerate(("svc-a", "svc-a", "svc-b")):
            status = 500 if (b + i) % 7 == 0 else 200
            spans.append(SeedSpan(f"{tag}{b}-{i // 2}", str(i), service, f"/p{b % 5}", "ua", service, status,
                                  1000 + 37 * b + i, INBOUND, "GET", start + i))  # fmt: skip
    return spans


def published(store: redis.Redis) -> dict[str, Any]:
    """Every key the analytics published, with its value; not the sliding window's, which depend on
    the moment of the run."""
    found: dict[str, Any] = {}
    for key in sorted(k for k in store.smembers(keys.PUBLISHED_KEYS) if ":window" not in k):  # type: ignore[union-attr]
        kind = store.type(key)
        if kind == "string":
            found[key] = store.get(key)
        elif kind == "hash":
            found[key] = store.hgetall(key)
        elif kind == "set":
            found[key] = sorted(store.smembers(key))  # type: ignore[arg-type]
        elif kind == "zset":
            found[key] = store.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            found[key] = store.lrange(key, 0, -1)
    return found


def runner_report(cfg: Config) -> dict[str, Any]:
    return read_report(status_file(cfg))


def reports_after(cfg: Config, count: int) -> dict[str, Any]:
    """Wait for ``count`` more reports of the runner (it writes one per poll, every second)."""
    seen = 0
    last = runner_report(cfg).get("updated")
    deadline = time.monotonic() + 60
    while seen < count:
        assert time.monotonic() < deadline, "the analytics runner stopped reporting"
        time.sleep(0.3)
        report = runner_report(cfg)
        if report.get("updated") != last:
            seen, last = seen + 1, report.get("updated")
    return runner_report(cfg)


@pytest.fixture
def fresh(stack: Launcher, cfg: Config, cassandra: Any, store: redis.Redis) -> Iterator[Launcher]:
    stack.down(["analytics"])
    schema.truncate(cassandra, schema.tables())
    store.flushdb()
    store.sadd(keys.VISIBILITY_SERVICES, *[keys.underscore(s) for s in SERVICES])
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


def kill_tree(process: psutil.Process) -> None:
    """SIGKILL the runner and every process under it (spark-submit's JVM and the Python driver)."""
    family = [process, *process.children(recursive=True)]
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGKILL)
    psutil.wait_procs(family, timeout=30)


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


def recompute_from_scratch(cfg: Config, cassandra: Any) -> None:
    """What a fresh full recompute over the same rows publishes: no derived state, one run."""
    schema.truncate(cassandra, DERIVED_TABLES)
    cassandra.execute("DELETE FROM analytics_state WHERE name = 'progress'")
    result = subprocess.run([str(CHECKOUT_DIR / "spark-submit.sh"), str(CHECKOUT_DIR / "jobs" / "visibility.py"),
                             "--once"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


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
