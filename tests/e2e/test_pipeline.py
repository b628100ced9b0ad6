"""The whole pipeline: requests through the sample chain come out as figures in Redis.

sample chain -> Jaeger (OpenTelemetry) -> collector -> Kafka -> ingest -> Cassandra ->
analytics -> Redis, every part the real one, started the way `cloverctl local up` starts it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import yaml

from clover import keys
from clover.config import Config
from collector import client as collector
from collector.worker import OVERLAP_SECONDS
from jobs.publish import clear_published
from sdc import topology
from stack.launcher import Launcher
from tests.waiting import wait_until
from validation import client as validation
from validation.plan import parse_plan

pytestmark = pytest.mark.spark

SET_VISIBILITY = Path(__file__).resolve().parents[2] / "cloverctl" / "yaml" / "set_visibility.yaml"
PROXY = "proxy-access-control"


@pytest.fixture(scope="module")
def pipeline(stack: Launcher, cfg: Config, cassandra: Any) -> Iterator[Config]:
    stack.up(["sdc", "visibility", "validation"], progress=lambda m: print(f"[pipeline] {m}"))
    yield cfg
    collector.stop_collector(cfg.collector_grpc)
    stack.down(["validation", "analytics", "collector", "sdc"])


def track_the_original_sample(store: redis.Redis) -> None:
    """What `cloverctl set visibility -f set_visibility.yaml` tracks (the original guide's file)."""
    sample = yaml.safe_load(SET_VISIBILITY.read_text())
    with store.pipeline(transaction=True) as tx:
        tx.delete(keys.VISIBILITY_SERVICES, keys.METRIC_PREFIXES, keys.METRIC_SUFFIXES)
        tx.sadd(keys.VISIBILITY_SERVICES, *[s["name"] for s in sample["services"]])
        tx.sadd(keys.METRIC_PREFIXES, *[p["prefix"] for p in sample["metric_prefixes"]])
        tx.sadd(keys.METRIC_SUFFIXES, *[s["suffix"] for s in sample["metric_suffixes"]])
        tx.execute()


def proxy_url(cfg: Config, path: str) -> str:
    return f"http://{topology.pod_ip(cfg, PROXY)}:{topology.HTTP_PORT}{path}"


def test_requests_through_the_chain_become_exact_figures_in_redis(
    pipeline: Config, store: redis.Redis, cassandra: Any
) -> None:
    cfg = pipeline
    assert collector.truncate_visibility(cfg.collector_grpc) == "Truncated visibility tables"
    clear_published(store)
    track_the_original_sample(store)
    # Collect from now on: traffic earlier tests sent through the chain stays out of the counts.
    start_us = int((time.time() + OVERLAP_SECONDS) * 1_000_000)
    store.delete(keys.COLLECTOR_WATERMARKS)
    store.hset(
        keys.COLLECTOR_WATERMARKS, mapping={keys.hyphen(s): start_us for s in store.smembers(keys.VISIBILITY_SERVICES)}
    )
    assert collector.start_collector(cfg.collector_grpc, sinterval=2).startswith("Started collector on pid:")

    for _ in range(20):
        response = requests.get(proxy_url(cfg, "/"), headers={"User-Agent": "e2e-browser"}, timeout=10)
        assert response.status_code == 200
    for _ in range(4):
        response = requests.get(proxy_url(cfg, "/no/such/page"), headers={"User-Agent": "e2e-bot"}, timeout=10)
        assert response.status_code == 404

    def proxy_figures() -> dict[str, str] | None:
        figures = store.hgetall(keys.service_stats(PROXY))
        return figures if figures.get("request_count") == "24" else None

    figures = wait_until(proxy_figures, 180, 1.0, "the proxy's 24 requests in Redis")
    assert (figures["errors_4xx"], figures["errors_5xx"]) == ("4", "0")
    assert figures["error_rate"] == figures["error_rate_4xx"] == "0.1667"
    rt = [float(figures[f]) for f in (keys.RT_MIN, "p50_rt", "p99_rt", keys.RT_MAX)]
    assert rt == sorted(rt) and rt[0] > 0
    window = store.hgetall(keys.service_window(PROXY))
    assert (window["request_count"], window["errors_4xx"]) == ("24", "4")
    urls = store.hgetall(keys.url_stats(PROXY))
    assert sorted(urls) == ["/", "/no/such/page"]  # path and query: the http.url tags' host is not part of the key

    def stored_agents() -> dict[str, float]:
        rows = cassandra.execute("SELECT user_agent FROM spans")
        counts: dict[str, float] = {}
        for row in rows:
            if row.user_agent:
                counts[row.user_agent] = counts.get(row.user_agent, 0) + 1
        return counts

    # The analytics publishes what the ingest stored: the same counts, span for span.
    agents = wait_until(
        lambda: (s := stored_agents()) == dict(store.zrange(keys.SPAN_USER_AGENT_Z, 0, -1, withscores=True)) and s,
        60,
        1.0,
        "Redis user-agent counts to match Cassandra's",
    )
    assert set(agents) == {"e2e-browser", "e2e-bot"}
    assert agents["e2e-browser"] / 20 == agents["e2e-bot"] / 4  # the same spans per request, whatever the URL
    span_total = cassandra.execute("SELECT count(*) FROM spans").one().count
    trace_total = cassandra.execute("SELECT count(*) FROM traces").one().count
    assert (store.get(keys.SPAN_COUNT), store.get(keys.TRACE_COUNT)) == (str(span_total), str(trace_total))

    # The original sample's metric names are collected from the chain's Prometheus metrics.
    name = keys.metric_value("envoy_cluster_inbound_9180__", "proxy_access_control",
                             "_default_svc_cluster_local_upstream_rq_2xx")  # fmt: skip
    # Prometheus finds a new pod within 10 s (file discovery, then a scrape); until then the history
    # may end with what an earlier proxy at the same address had counted.
    wait_until(
        lambda: float((store.lrange(keys.METRICS_HISTORY_PREFIX + name, -1, -1) or ["0"])[0]) >= 20,
        90,
        1.0,
        "the proxy's 20 answers in the metric's history",
    )

    # A JMeter plan (the validation service) through the chain: its user-agents in the counts.
    per_request = agents["e2e-browser"] / 20
    plan = parse_plan(
        {
            "load_spec": {"num_threads": 2, "loops": 3, "ramp_time": 0},
            "url_list": [
                {"name": "url1", "url": f"http://{PROXY}.default:9180/", "method": "GET", "user-agent": "jm-chrome"},
                {
                    "name": "url2",
                    "url": f"http://{PROXY}.default:9180/test",
                    "method": "GET",
                    "user-agent": "jm-safari",
                },
            ],
        }
    )
    assert validation.gen_test(cfg.validation_grpc, plan) == "Generated test plan"
    run = validation.start_test(cfg.validation_grpc)
    finished = validation.wait_for_run(cfg.validation_grpc, run.run_id, timeout=180)
    assert (finished.samples, finished.errors) == (12, 0)
    wait_until(lambda: store.hget(keys.service_stats(PROXY), "request_count") == "36", 180, 1.0, "36 requests")
    user_agents = wait_until(
        lambda: (
            (z := dict(store.zrange(keys.SPAN_USER_AGENT_Z, 0, -1, withscores=True))).get("jm-safari")
            == 6 * per_request
            and z
        ),
        60,
        1.0,
        "the JMeter user-agents counted",
    )
    assert user_agents["jm-chrome"] == user_agents["jm-safari"] == 6 * per_request
