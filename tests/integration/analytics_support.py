"""The analytics runner as the tests see it: what it published, its reports, killing it, and the
figures a fresh full recompute over the same rows publishes."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
from collections.abc import Iterable
from typing import Any

import psutil
import redis

from clover import keys, schema
from clover.config import Config
from jobs.session import drop_cassandra_sessions, spark_session
from jobs.state import DERIVED_TABLES
from jobs.status import analytics_status_file, read_report
from jobs.visibility import VisibilityAnalytics
from stack.launcher import Launcher
from tests.integration.visibility_seed import INBOUND, SeedSpan


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


def reset_visibility(stack: Launcher, cassandra: Any, store: redis.Redis, services: Iterable[str]) -> None:
    """No analytics or collector running, empty tables and Redis, ``services`` tracked."""
    stack.down(["analytics", "collector"])
    schema.truncate(cassandra, schema.tables())
    store.flushdb()
    store.sadd(keys.VISIBILITY_SERVICES, *[keys.underscore(s) for s in services])


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
    return read_report(analytics_status_file(cfg))


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


def kill_tree(process: psutil.Process) -> None:
    """SIGKILL a process and every process under it (spark-submit's JVM and the Python driver)."""
    family = [process, *process.children(recursive=True)]
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGKILL)
    psutil.wait_procs(family, timeout=30)


def run_in_this_process(cfg: Config, **changes: Any) -> None:
    """One run of the analytics job (what ``spark-submit.sh jobs/visibility.py --once`` does) in the
    test process's Spark session, with ``changes`` to the configuration: the job's code without a
    JVM start per run. spark-submit.sh itself runs in test_visibility_job and the runner's tests."""
    cfg = dataclasses.replace(cfg, **changes)
    spark = spark_session("clover-visibility", cfg)
    analytics = VisibilityAnalytics(spark, cfg)
    try:
        analytics.load_state()
        assert analytics.run_once() is not None, "a clear held the visibility lease"
    finally:
        analytics.close()
        # As a spark-submit run's JVM would: no connector session outlives the run. One kept open
        # across a Cassandra restart (test_pipeline_faults) never refreshes its schema again.
        drop_cassandra_sessions(spark)


def recompute_from_scratch(cfg: Config, cassandra: Any) -> None:
    """What a fresh full recompute over the same rows publishes: no derived state, one run."""
    schema.truncate(cassandra, DERIVED_TABLES)
    cassandra.execute("DELETE FROM analytics_state WHERE name = 'progress'")
    run_in_this_process(cfg)
