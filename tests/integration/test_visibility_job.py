"""The analytics job over a data set the test seeds in Cassandra: its first run through spark-submit.sh,
the later ones in the test's Spark session.

Every Redis key is compared with what plain Python computes from the same rows: counts, sets
and min/avg/max exactly (in the original's 2-decimal format), percentiles within the sketch's
stated 1%, and the window figures over only the window's spans. The seeded rows exercise the
counting model: server spans are a service's requests, client spans (by span kind, or by
Envoy's outbound cluster) are not; gRPC statuses count like HTTP ones; two sources seeing one
service give its figures from the one that saw more, each source's figures published apart;
one URL written absolute and relative is one URL.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

import pytest
import redis

from clover import figures, keys, schema
from clover.config import CHECKOUT_DIR, Config
from jobs.aggregates import RELATIVE_ACCURACY
from stack.launcher import Launcher
from tests.integration.analytics_support import run_in_this_process
from tests.integration.visibility_seed import INBOUND, SeedSpan, make_spans, seed, seed_metric

pytestmark = pytest.mark.spark

PREFIX, SUFFIX = "cltest_", "_rq"


def run_job() -> None:
    result = subprocess.run(
        [str(CHECKOUT_DIR / "spark-submit.sh"), str(CHECKOUT_DIR / "jobs" / "visibility.py"), "--once"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def is_request(s: SeedSpan) -> bool:
    server_side = s.kind == "server" or (s.kind is None and not (s.upstream or "").startswith("outbound"))
    return server_side and (s.status is not None or s.grpc is not None)


def requests(spans: list[SeedSpan], service: str, source: str | None = None) -> list[SeedSpan]:
    """The service's requests as ``source`` saw them; by default as the source that saw most of them."""
    mine = [s for s in spans if s.service == service and is_request(s)]
    if source is None:
        seen = {src: sum(1 for s in mine if s.source == src) for src in figures.SOURCES}
        source = max(seen, key=lambda src: (seen[src], -figures.SOURCES.index(src)))
    return [s for s in mine if s.source == source]


def target(s: SeedSpan) -> str | None:
    if s.url is None:
        return "/" + s.operation.removeprefix("/") if s.grpc is not None else None
    return re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*", "", s.url) or "/"


def exact_quantile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[int(q * (len(ordered) - 1))])


def expected_figures(mine: list[SeedSpan]) -> dict[str, str]:
    if not mine:
        return {keys.RT_MIN: "NA", keys.RT_AVG: "NA", keys.RT_MAX: "NA", "request_count": "0", "source": "NA"}
    durations = [s.duration_us for s in mine]
    n4xx = sum(1 for s in mine if 400 <= (s.status or 0) < 500)
    n5xx = sum(1 for s in mine if (s.status or 0) >= 500)
    errors = sum(1 for s in mine if (s.status or 0) >= 400 or (s.grpc or 0) != 0)
    return {
        keys.RT_MIN: f"{min(durations) / 1000:.2f}",
        keys.RT_AVG: f"{sum(durations) / len(durations) / 1000:.2f}",
        keys.RT_MAX: f"{max(durations) / 1000:.2f}",
        "request_count": str(len(mine)),
        "errors": str(errors),
        "errors_4xx": str(n4xx),
        "errors_5xx": str(n5xx),
        "error_rate": f"{errors / len(mine):.4f}",
        "source": mine[0].source,
    }


def assert_percentiles(published: dict[str, str], durations: list[int]) -> None:
    for name, q in (("p50_rt", 0.5), ("p90_rt", 0.9), ("p99_rt", 0.99), ("p999_rt", 0.999)):
        exact = exact_quantile(durations, q) / 1000
        assert abs(float(published[name]) - exact) <= RELATIVE_ACCURACY * exact + 0.005, (name, published[name], exact)


def counts(spans: list[SeedSpan], value: Any) -> dict[str, float]:
    found: dict[str, float] = {}
    for s in spans:
        v = value(s)
        if v is not None:
            found[v] = found.get(v, 0) + 1
    return found


def zset(store: redis.Redis, key: str) -> dict[str, float]:
    return dict(store.zrange(key, 0, -1, withscores=True))  # type: ignore[arg-type]


@pytest.fixture
def seeded(stack: Launcher, cfg: Config, cassandra: Any, store: redis.Redis) -> tuple[list[SeedSpan], list[str], int]:
    schema.truncate(cassandra, schema.tables())
    store.flushdb()
    store.sadd(keys.VISIBILITY_SERVICES, "svc_a", "svc_b", "svc_g", "svc_n", "clover_server1", "svc_empty")
    store.sadd(keys.METRIC_PREFIXES, PREFIX)
    store.sadd(keys.METRIC_SUFFIXES, SUFFIX)
    now_us = int(time.time() * 1_000_000)
    spans = make_spans(now_us, cfg.bucket_seconds * 1_000_000)
    seed(cassandra, spans, cfg.bucket_seconds)
    metric_values = seed_metric(cassandra, f"{PREFIX}svc_a{SUFFIX}", 120, now_us, cfg.bucket_seconds)
    return spans, metric_values, now_us


def assert_service(store: redis.Redis, spans: list[SeedSpan], service: str, window_start_us: int) -> None:
    for source in (None, *figures.SOURCES):
        mine = requests(spans, service, source)
        if source is not None and not mine:
            assert not store.exists(keys.service_stats(service, source)), (service, source)
            continue
        published = store.hgetall(keys.service_stats(service, source))
        expected = expected_figures(mine)
        assert {k: published[k] for k in expected} == expected, (service, source)
        if mine:
            assert_percentiles(published, [s.duration_us for s in mine])
        window = store.hgetall(keys.service_window(service, source))
        expected_window = expected_figures(requests([s for s in spans if s.start_us >= window_start_us], service,
                                                    source))  # fmt: skip
        assert {k: window[k] for k in expected_window} == expected_window, (service, source)
        urls = {u: json.loads(v) for u, v in store.hgetall(keys.url_stats(service, source)).items()}
        assert set(urls) == {target(s) for s in mine}, (service, source)
        for url, published_url in urls.items():
            expected_url = expected_figures([s for s in mine if target(s) == url])
            assert {k: published_url[k] for k in expected_url} == expected_url, (service, source, url)


def assert_results(store: redis.Redis, spans: list[SeedSpan], window_start_us: int) -> None:
    assert store.get(keys.SPAN_COUNT) == str(len(spans))
    assert store.get(keys.TRACE_COUNT) == str(len({s.trace for s in spans}))
    for service in ("svc-a", "svc-b", "svc-g", "svc-n", "clover-server1", "svc-empty"):
        assert_service(store, spans, service, window_start_us)
    assert store.hget(keys.service_stats("svc-empty"), "p99_rt") == "NA"

    assert zset(store, keys.SPAN_URLS_Z) == counts(spans, lambda s: s.url)
    assert store.smembers(keys.SPAN_URLS) == set(counts(spans, lambda s: s.url))
    assert zset(store, keys.SPAN_USER_AGENT_Z) == counts(spans, lambda s: s.agent)
    assert zset(store, keys.SPAN_NODE_ID_Z) == counts(spans, lambda s: s.node)
    assert zset(store, keys.SPAN_STATUS_CODES_Z) == counts(
        spans, lambda s: f"{s.status}, {s.url}" if s.status is not None and s.url is not None else None
    )
    assert zset(store, keys.SPAN_NODE_URL_Z) == counts(
        spans, lambda s: f"{s.node}, {s.url}" if s.node is not None and s.url is not None else None
    )
    assert store.smembers(keys.SPAN_OPERATION_NAME) == {s.operation for s in spans}
    assert store.smembers(keys.SPAN_UPSTREAM_CLUSTER) == {s.upstream for s in spans if s.upstream}
    assert store.smembers(keys.SPAN_STATUS_CODE) == {str(s.status) for s in spans if s.status is not None}


def test_every_key_is_exact_and_a_second_run_updates_window_and_totals(
    cfg: Config, cassandra: Any, store: redis.Redis, seeded: tuple[list[SeedSpan], list[str], int]
) -> None:
    spans, metric_values, now_us = seeded
    run_job()
    window_start_us = now_us - 300 * 1_000_000
    assert_results(store, spans, window_start_us)
    assert store.get(keys.METRIC_COUNT) == "120"
    assert store.lrange(f"metrics_{PREFIX}svc_a{SUFFIX}", 0, -1) == metric_values[-100:]

    # Late spans for a bucket already computed, a new bucket, and a trace counted before.
    bucket_us = cfg.bucket_seconds * 1_000_000
    recent = (now_us - 60 * 1_000_000) // bucket_us * bucket_us
    newer = (now_us - 30 * 1_000_000) // bucket_us * bucket_us
    more = [
        SeedSpan("late1", "1", "svc-b", "/api?q=1", "curl", "svc-b", 404, 90_000, INBOUND, "GET", recent + 5),
        SeedSpan("new1", "1", "svc-b", "/api?q=1", "edge", "svc-b", 200, 100, INBOUND, "GET", newer),
        SeedSpan("a3", "9", "svc-a", "/upload", "safari", "svc-a", 200, 31_000, INBOUND, "POST", newer),
        SeedSpan(
            "late2", "1", "svc-g", None, None, "svc-g", None, 4000, None, "greet.Greeter/SayHello", recent + 7, grpc=13
        ),
    ]
    seed(cassandra, more, cfg.bucket_seconds)
    run_in_this_process(cfg)
    assert_results(store, spans + more, window_start_us)

    # A retention of 10 minutes: the buckets of 20 minutes ago leave the totals. A trace counts
    # where its first span is, so it leaves with that span's bucket.
    run_in_this_process(cfg, retention_seconds=600)
    kept = [s for s in spans + more if s.start_us >= now_us - 600 * 1_000_000]
    first_span = {}
    for span in sorted(spans + more, key=lambda x: x.start_us):
        first_span.setdefault(span.trace, span.start_us)
    assert store.get(keys.SPAN_COUNT) == str(len(kept))
    assert store.get(keys.TRACE_COUNT) == str(sum(1 for t in first_span.values() if t >= now_us - 600 * 1_000_000))
    assert zset(store, keys.SPAN_URLS_Z) == counts(kept, lambda s: s.url)
    assert zset(store, keys.SPAN_USER_AGENT_Z) == counts(kept, lambda s: s.agent)
    published = store.hgetall(keys.service_stats("svc-a"))
    expected = expected_figures(requests(kept, "svc-a"))
    assert expected[keys.RT_MIN] == "30.00"  # the expired bucket held the old min, 1.00
    assert {k: published[k] for k in expected} == expected
    assert_percentiles(published, [s.duration_us for s in requests(kept, "svc-a")])
