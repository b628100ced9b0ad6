"""Every REST route of the controller, as a process of the local stack, against the real
services: Redis (stats and config written by the test), Cassandra and the collector (init,
start/stop, truncate, clear), the sample chain's pods (load balancers, servers, the proxy, the
IDS) and the validation service with real JMeter. Good and bad bodies; exact replies."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import yaml

from clover import keys
from clover.config import API_TOKEN_FILE, Config, secret_file
from stack.launcher import Launcher
from tests import controller_client
from tests.integration.controller_parts import CHAIN, flush_visibility, running
from tests.waiting import wait_until

YAML_DIR = Path(__file__).resolve().parents[2] / "cloverctl" / "yaml"
TEXT = {"Accept": "text/plain"}


@pytest.fixture(scope="module")
def parts(stack: Launcher) -> Iterator[Launcher]:
    with running(stack, CHAIN) as launcher:
        yield launcher


@pytest.fixture(scope="module")
def base(parts: Launcher, cfg: Config) -> str:
    return cfg.controller_url


@pytest.fixture
def store(parts: Launcher, cfg: Config) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(cfg.redis_url, decode_responses=True)
    flush_visibility(client)
    yield client
    flush_visibility(client)
    client.close()


def sample(name: str) -> Any:
    return yaml.safe_load((YAML_DIR / name).read_text())


def get(base: str, path: str, **kwargs: Any) -> requests.Response:
    return controller_client.get(base + path, timeout=120, **kwargs)


def post(base: str, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
    return controller_client.post(base + path, json=body, timeout=120, **kwargs)


def refused(reply: requests.Response) -> tuple[int, str, str | None]:
    assert reply.headers["Content-Type"] == "application/json", reply.text
    payload = reply.json()
    return reply.status_code, payload["error"], payload["field"]


def ok(reply: requests.Response) -> str:
    assert reply.status_code == 200, reply.text
    return reply.text


def seed_results(store: redis.Redis) -> None:
    """Results as the analytics publish them, for two tracked services."""
    store.sadd(keys.VISIBILITY_SERVICES, "proxy_access_control", "clover_server1")
    store.sadd(keys.METRIC_PREFIXES, "envoy_cluster_outbound_9180__")
    store.sadd(keys.METRIC_SUFFIXES, "_rq_2xx")
    store.sadd(keys.CUSTOM_METRICS, "envoy_tracing_zipkin_spans_sent")
    store.sadd(keys.TRACING_SERVICES, "proxy-access-control", "clover-server1", "snort-ids")
    store.mset({keys.TRACE_COUNT: "3", keys.SPAN_COUNT: "12", keys.METRIC_COUNT: "40"})
    store.hset("proxy-access-control", mapping={
        "min_rt": "1.00", "avg_rt": "5.00", "max_rt": "90.00", "p50_rt": "4.00", "p90_rt": "9.00", "p99_rt": "60.00",
        "p999_rt": "90.00", "request_count": "200", "errors_4xx": "2", "errors_5xx": "4", "error_rate": "0.0300",
        "error_rate_4xx": "0.0100", "error_rate_5xx": "0.0200", "request_rate": "3.33", "errors": "6",
        "request_bytes": "6400", "response_bytes": "512000", "source": "jaeger"})  # fmt: skip
    store.hset("proxy-access-control:window", mapping={"p99_rt": "20.00", "request_count": "10"})
    store.hset("proxy-access-control:urls", mapping={"/": json.dumps({"p50_rt": "3.00", "request_count": "150"})})
    store.sadd(keys.SPAN_URLS, "/", "/a")
    store.sadd(keys.SPAN_STATUS_CODE, "200", "404")
    store.sadd(keys.SPAN_USER_AGENT, "chrome")
    store.zadd(keys.SPAN_URLS_Z, {f"/u{i:02d}": i for i in range(60)})
    store.zadd(keys.SPAN_USER_AGENT_Z, {"chrome": 3, "safari": 9})
    store.zadd(keys.SPAN_STATUS_CODES_Z, {"200, /": 10, "404, /a": 2})
    store.zadd(keys.SPAN_NODE_ID_Z, {"proxy-access-control-1.default": 7})
    store.rpush("metrics_envoy_cluster_outbound_9180__proxy_access_control_rq_2xx", "1", "2", "3")
    store.set("envoy_cluster_outbound_9180__proxy_access_control_rq_2xx", "3")
    store.set("envoy_tracing_zipkin_spans_sent", "17")
    # What the analytics registers as published (so that a clear removes it all).
    store.sadd(keys.PUBLISHED_KEYS, "proxy-access-control", "proxy-access-control:window", "proxy-access-control:urls",
               keys.SPAN_URLS, keys.SPAN_STATUS_CODE, keys.SPAN_USER_AGENT, keys.SPAN_URLS_Z, keys.SPAN_USER_AGENT_Z,
               keys.SPAN_STATUS_CODES_Z, keys.SPAN_NODE_ID_Z,
               "metrics_envoy_cluster_outbound_9180__proxy_access_control_rq_2xx")  # fmt: skip


# -- test pages, health, OpenAPI --------------------------------------------------------------


def test_the_test_pages_health_and_the_api_description(base: str) -> None:
    assert ok(get(base, "/test")) == "<h1 style='color:blue'>clover-controller up</h1>"
    assert ok(get(base, "/jmeter/test")) == "<h1 style='color:blue'>Jmeter API Test Response</h1>"
    assert get(base, "/health").json() == {"status": "ok", "redis": "ok"}
    doc = get(base, "/openapi.json").json()
    assert doc["info"]["title"] == "clover-controller" and "/nginx/lb" in doc["paths"]
    dashboard = get(base, "/visibility", allow_redirects=True)
    assert dashboard.url == base + "/dashboard/" and "<title>Clover</title>" in dashboard.text


# -- visibility configuration and results ---------------------------------------------------


def test_set_visibility_replaces_what_is_tracked_and_get_reads_it_back(base: str, store: redis.Redis) -> None:
    assert ok(post(base, "/visibility/set", sample("set_visibility.yaml"))) == "Updated visibility config"
    expected = {
        "visibility_services": ["clover_server1", "clover_server2", "clover_server3", "proxy_access_control"],
        "metric_prefixes": ["envoy_cluster_inbound_9180__", "envoy_cluster_outbound_9180__"],
        "metric_suffixes": ["_default_svc_cluster_local_upstream_cx_active",
                            "_default_svc_cluster_local_upstream_rq_2xx"],
        "custom_metrics": ["envoy_tracing_zipkin_spans_sent"],
    }  # fmt: skip
    assert get(base, "/visibility/get/all").json() == expected
    assert get(base, "/visibility/get/services").json() == {"visibility_services": expected["visibility_services"]}
    assert post(base, "/visibility/get/metrics").json() == {
        k: v for k, v in expected.items() if k != "visibility_services"
    }
    # Only services: the metric names stay (the original's UI posted only services and lost nothing).
    assert ok(post(base, "/collector/set", {"services": [{"name": "http-lb"}]})) == "Updated visibility config"
    assert get(base, "/visibility/get/all").json() == {**expected, "visibility_services": ["http_lb"]}


def test_a_bad_visibility_config_changes_nothing(base: str, store: redis.Redis) -> None:
    ok(post(base, "/visibility/set", {"services": [{"name": "proxy-access-control"}]}))
    cases = [
        (None, "Specify at least one service to track", "services"),
        ({"services": []}, "Specify at least one service to track", "services"),
        ({"services": [{"name": "x"}], "metric_suffixes": [{"suffix": "_s"}]},
         "Invalid value in json/yaml: metric_prefixes: metric_prefixes and metric_suffixes must be given together",
         "metric_prefixes"),
        ({"services": [{"name": "x"}], "metric_prefixes": [{"prefix": ""}], "metric_suffixes": []},
         "Invalid value in json/yaml: metric_prefixes[0].prefix: must not be empty", "metric_prefixes[0].prefix"),
    ]  # fmt: skip
    for body, message, field in cases:
        assert refused(post(base, "/visibility/set", body)) == (400, message, field)
    assert store.smembers(keys.VISIBILITY_SERVICES) == {"proxy_access_control"}


def test_stats_have_the_original_shape_with_percentiles_and_the_busiest_counts(base: str, store: redis.Redis) -> None:
    seed_results(store)
    assert get(base, "/visibility/get/stats/system").json() == {"trace_count": "3", "span_count": "12",
                                                                "metric_count": "40"}  # fmt: skip
    tracing = get(base, "/visibility/get/stats/tracing").json()
    proxy = {"name": "proxy-access-control", "min": "1.00", "avg": "5.00", "max": "90.00", "p50": "4.00",
             "p90": "9.00", "p99": "60.00", "p999": "90.00", "request_count": "200", "errors_4xx": "2",
             "errors_5xx": "4", "error_rate": "0.0300", "error_rate_4xx": "0.0100", "error_rate_5xx": "0.0200",
             "request_rate": "3.33", "errors": "6", "request_bytes": "6400", "response_bytes": "512000",
             "source": "jaeger"}  # fmt: skip
    window = dict.fromkeys(k for k in proxy if k != "name")
    window.update({"p99": "20.00", "request_count": "10"})
    empty = dict.fromkeys(k for k in proxy if k != "name")
    assert tracing["response_times"] == [
        {"name": "clover-server1", **empty, "window": empty},
        {**proxy, "window": window},
    ]
    # The 51 highest counts, ascending (the original took the 51 lowest).
    assert tracing["request_url_count"] == [[f"/u{i:02d}", float(i)] for i in range(9, 60)]
    assert tracing["user_agent_count"] == [["chrome", 3.0], ["safari", 9.0]]
    assert tracing["status_code_count"] == [["404, /a", 2.0], ["200, /", 10.0]]
    assert tracing["node_id_count"] == [["proxy-access-control-1.default", 7.0]]
    assert tracing["node_url_count"] == []
    assert tracing["request_urls"] == ["/", "/a"]
    assert tracing["status_codes"] == ["200", "404"]
    assert tracing["user_agents"] == ["chrome"]
    two = get(base, "/visibility/get/stats/tracing?limit=2").json()["request_url_count"]
    assert two == [["/u58", 58.0], ["/u59", 59.0]]
    assert len(get(base, "/visibility/get/stats/tracing?limit=0").json()["request_url_count"]) == 60
    assert get(base, "/visibility/get/stats/metrics").json() == {"metrics_time": [
        {"name": "metrics_envoy_cluster_outbound_9180__clover_server1_rq_2xx", "service": "clover_server1",
         "prefix": "envoy_cluster_outbound_9180__", "suffix": "_rq_2xx", "values": []},
        {"name": "metrics_envoy_cluster_outbound_9180__proxy_access_control_rq_2xx",
         "service": "proxy_access_control", "prefix": "envoy_cluster_outbound_9180__", "suffix": "_rq_2xx",
         "values": ["1", "2", "3"]},
    ]}  # fmt: skip
    everything = get(base, "/visibility/get/stats/all").json()
    assert set(everything) == {"trace_count", "span_count", "metric_count", "metrics_time", "response_times",
                               "request_urls", "user_agents", "status_codes", "op_names", "node_ids",
                               "upstream_clusters", "user_agent_count", "request_url_count", "status_code_count",
                               "node_url_count", "node_id_count"}  # fmt: skip
    # A body's stat_type (or the query's) picks the type, consistently for "all" too.
    assert post(base, "/visibility/get/stats/all", {"stat_type": "system"}).json() == {
        "trace_count": "3", "span_count": "12", "metric_count": "40"}  # fmt: skip
    assert set(get(base, "/visibility/get/stats/all?stat_type=system").json()) == {"trace_count", "span_count",
                                                                                    "metric_count"}  # fmt: skip
    assert get(base, "/visibility/get/urls/proxy_access_control").json() == {"/": {**empty, "p50": "3.00",
                                                                                   "request_count": "150"}}  # fmt: skip
    assert refused(get(base, "/visibility/get/stats/spans")) == (
        400, "stat type 'spans' must be one of system, metrics, tracing, all", "s_type")  # fmt: skip


def test_the_metrics_fragment_lists_each_tracked_name_with_its_latest_value(base: str, store: redis.Redis) -> None:
    seed_results(store)
    fragment = ok(get(base, "/visibility/metrics"))
    cells = re.findall(r'<div class="large-(?:5|3) medium-3 cell">\s*(.*?)\s*</div>', fragment)
    assert cells == ["envoy_cluster_outbound_9180__clover_server1_rq_2xx", "",
                     "envoy_cluster_outbound_9180__proxy_access_control_rq_2xx", "3",
                     "envoy_tracing_zipkin_spans_sent", "17"]  # fmt: skip


# -- collector relays and clear ---------------------------------------------------------------


def test_collector_init_start_stop_with_the_original_replies(base: str, parts: Launcher, cfg: Config) -> None:
    pid = parts.process("collector").pid  # type: ignore[union-attr]
    assert ok(get(base, "/collector/init")) == "Added visibility schemas in cassandra"
    try:
        message = "Invalid value in json/yaml: t_port: must be a port number (1-65535), not 'http'"
        assert refused(post(base, "/collector/start", {"t_port": "http"})) == (400, message, "t_port")
        assert get(base, "/collector/status").json()["running"] is False
        # A host without its port: the port of the configured trace backend (the original refused it).
        assert ok(post(base, "/collector/start", {"sample_interval": "2", "t_host": "127.0.0.1"})) == (
            f"Started collector on pid: {pid}"
        )
        status = get(base, "/collector/status").json()
        assert status["running"] is True
        assert (status["config"]["t_host"], status["config"]["t_port"], status["config"]["sinterval"]) == (
            "127.0.0.1", cfg.jaeger_port, 2.0)  # fmt: skip
        assert ok(get(base, "/collector/start")) == f"Collector already running on pid: {pid}"
        assert ok(get(base, "/collector/stop")) == f"Stopped collector on pid: {pid}"
        assert refused(get(base, "/collector/stop")) == (
            409, "Failed to stop collector: the collector is not running", None)  # fmt: skip
        assert get(base, "/collector/start", headers={"Accept": "application/json"}).json() == {
            "message": f"Started collector on pid: {pid}"}  # fmt: skip
    finally:
        controller_client.get(base + "/collector/stop", timeout=90)


def test_clear_truncates_the_tables_and_resets_every_derived_key_but_keeps_the_config(
    base: str, store: redis.Redis, cassandra: Any
) -> None:
    ok(get(base, "/collector/init"))
    flush_visibility(store)  # init tracks the original's default services when none are
    cassandra.execute("INSERT INTO traces (traceid, processes) VALUES ('t-clear', ['p'])")
    seed_results(store)
    assert ok(get(base, "/visibility/clear")) == "Truncated visibility tables"
    assert cassandra.execute("SELECT count(*) FROM traces").one()[0] == 0
    assert store.mget(keys.TRACE_COUNT, keys.SPAN_COUNT, keys.METRIC_COUNT) == ["0", "0", "0"]
    assert store.hgetall("proxy-access-control") == {"min_rt": "NA", "avg_rt": "NA", "max_rt": "NA"}
    gone = [*keys.CLEARED_SETS_AND_ZSETS, "metrics_envoy_cluster_outbound_9180__proxy_access_control_rq_2xx",
            "envoy_cluster_outbound_9180__proxy_access_control_rq_2xx", "envoy_tracing_zipkin_spans_sent"]  # fmt: skip
    assert [k for k in gone if store.exists(k)] == []
    assert store.smembers(keys.VISIBILITY_SERVICES) == {"proxy_access_control", "clover_server1"}
    assert store.smembers(keys.TRACING_SERVICES) == {"proxy-access-control", "clover-server1", "snort-ids"}
    assert ok(get(base, "/collector/truncate")) == "Truncated visibility tables"


# -- sample chain relays ----------------------------------------------------------------------


def served_by(cfg: Config, n: int) -> set[tuple[str, str]]:
    from sdc import topology

    url = f"http://{topology.pod_ip(cfg, 'proxy-access-control')}:9180/"
    seen = set()
    for _ in range(n):
        answer = requests.get(url, timeout=10)
        assert answer.status_code == 200
        lb = re.search(r"1\.1 (http-lb-v\d)", answer.headers["Via"])
        assert lb
        seen.add((lb.group(1), answer.headers["X-Served-By"]))
    return seen


def test_set_lb_changes_the_live_chain_and_a_bad_body_changes_nothing(base: str, cfg: Config) -> None:
    before = get(base, "/nginx/config/http-lb-v2").json()
    assert before["lb"]["slb_list"] == ["clover-server1:9180", "clover-server2:9180", "clover-server3:9180"]
    try:
        assert ok(post(base, "/nginx/lb", sample("lbv2.yaml"))) == "Modified nginx config"
        assert get(base, "/nginx/config/http-lb-v2").json()["lb"]["slb_list"] == ["clover-server4:9180",
                                                                                  "clover-server5:9180"]  # fmt: skip
        assert {s for lb, s in served_by(cfg, 12) if lb == "http-lb-v2"} == {"clover-server4", "clover-server5"}
        bad = [
            ({**sample("lbv2.yaml"), "lb_list": []},
             (400, "Invalid value in json/yaml: lb_list must name at least one server ({url: host:port})", "lb_list")),
            ({**sample("lbv2.yaml"), "lb_name": "http-lb-v7.default"},
             (400, "Invalid value in json/yaml: lb_name: no pod or service named 'http-lb-v7.default' (not in the "
                   "local pod registry, and not resolvable)", "lb_name")),
            ({**sample("lbv2.yaml"), "lb_list": [{"url": "clover-server9:9180"}]}, None),
        ]  # fmt: skip
        for body, expected in bad:
            reply = post(base, "/nginx/lb", body)
            if expected:
                assert refused(reply) == expected
            else:  # refused by the pod itself: its reason, naming the field
                status, message, field = refused(reply)
                assert (status, field) == (400, "lb_list[0].url") and message.startswith(
                    "Failed to modify nginx config"
                )
        assert get(base, "/nginx/config/http-lb-v2").json()["lb"]["slb_list"] == ["clover-server4:9180",
                                                                                  "clover-server5:9180"]  # fmt: skip
    finally:
        post(
            base,
            "/nginx/lb",
            {**sample("lbv2.yaml"), "lb_list": [{"url": f"clover-server{i}:9180"} for i in (1, 2, 3)]},
        )


def test_set_server_and_proxy_relay_to_the_pods(base: str) -> None:
    current = get(base, "/nginx/config/clover-server2").json()["server"]
    body = {"server_name": "clover-server2", "server_port": current["server_port"], "site_root": current["site_root"]}
    assert ok(post(base, "/nginx/server", body)) == "Modified nginx config"
    missing = {**body, "files": [{"src_file": "/var/www/html/upload/0000009999", "dest_file": "/var/www/html/x"}]}
    assert refused(post(base, "/nginx/server", missing)) == (
        400, "Failed to modify nginx config: files[0].src_file '/var/www/html/upload/0000009999' does not exist on "
             "clover-server2", "files[0].src_file")  # fmt: skip
    assert refused(post(base, "/nginx/server", {"server_name": "clover-server2", "locations": {}})) == (
        400, "Invalid value in json/yaml: locations must be a list, not dict", "locations")  # fmt: skip
    assert ok(post(base, "/nginx/proxy", {"block_seconds": 4})) == "Modified nginx config"
    assert get(base, "/nginx/config/proxy-access-control").json()["proxy"]["block_seconds"] == 4
    assert refused(get(base, "/nginx/config/nobody")) == (
        400, "Invalid value in json/yaml: name: no pod or service named 'nobody' (not in the local pod registry, and "
             "not resolvable)", "name")  # fmt: skip


def test_ids_rules_start_stop_status_and_alerts(base: str, cfg: Config) -> None:
    assert ok(post(base, "/snort/addrule", sample("idsrule_scan.yaml"))) == "Added to local rules"
    rules = {r["sid"]: r for r in get(base, "/snort/rules").json()["rules"]}
    assert rules["10000003"]["msg"] == "MALWARE-CNC User-Agent ASafaWeb Scan"
    assert re.fullmatch(r"Stopped Snort on pid: \d+, Cleared Snort logs", ok(get(base, "/snort/stop")))
    assert get(base, "/snort/status").json()["running"] is False
    assert re.fullmatch(r"Started Snort on pid: \d+", ok(get(base, "/snort/start")))
    assert get(base, "/snort/status").json()["running"] is True
    assert next(r for r in get(base, "/snort/rules").json()["rules"] if r["sid"] == "10000003")["loaded"] is True
    unknown = "lb_group, lb_list, lb_name, lb_path, server_name, server_port"
    expected = "content, dest_ip, dest_port, msg, protocol, rev, rule, sid, src_ip, src_port"
    assert refused(post(base, "/snort/addrule", sample("lbv2.yaml")))[1:] == (
        f"Invalid value in json/yaml: the rule spec: unknown field(s) {unknown}; expected {expected}",
        "lb_group",
    )
    store = redis.Redis.from_url(cfg.redis_url)
    store.sadd(keys.SNORT_EVENTS, "901", "902", "903")
    for event in (901, 902, 903):
        store.hset(keys.snort_event(event), mapping={"event-id": str(event), "msg": f"alert {event}",
                                                     "data": b"\x00\xffraw"})  # fmt: skip
    try:
        raw = get(base, "/snort/get_events?event_key=snort_event:902&field=data")
        assert (raw.status_code, raw.content) == (200, b"\x00\xffraw")
        # The original's clients sent the query as a JSON body on the GET.
        on_get = requests.get(base + "/snort/get_events", json={"event_key": "snort_event:903", "field": "msg"},
                              timeout=10)  # fmt: skip
        assert on_get.content == b"alert 903"
        assert refused(get(base, "/snort/get_events?event_key=snort_event:903")) == (
            400, "Invalid IDS event query: field: is required", "field")  # fmt: skip
        assert refused(get(base, "/snort/get_events?event_key=snort_event:999&field=msg"))[0] == 404
        newest = get(base, "/snort/events?limit=2").json()
        assert newest["total"] >= 3
        assert [a["event-id"] for a in newest["alerts"]][:2] == ["903", "902"]
    finally:
        store.srem(keys.SNORT_EVENTS, "901", "902", "903")
        store.delete(*(keys.snort_event(e) for e in (901, 902, 903)))
        store.close()


# -- validation relays ----------------------------------------------------------------------


def test_a_load_test_through_the_controller(base: str) -> None:
    probe = {"name": "probe", "url": base + "/test", "method": "GET", "user-agent": "clover-it"}
    plan = {"load_spec": {"num_threads": 1, "loops": 2}, "url_list": [probe]}
    bad = {"load_spec": {"num_threads": 1, "loops": 0}, "url_list": [{"name": "probe", "url": "gopher://x"}]}
    status, message, field = refused(post(base, "/jmeter/gen", bad))
    assert (status, field) == (400, "load_spec.duration")
    assert message == ("Invalid value in test plan json/yaml: load_spec.duration: loops 0 runs forever: give a "
                       "duration (seconds) to stop it")  # fmt: skip
    assert [p["field"] for p in post(base, "/jmeter/gen", bad).json()["problems"]] == ["load_spec.duration",
                                                                                       "url_list[0].url"]  # fmt: skip
    assert ok(post(base, "/jmeter/gen", plan)) == "Generated test plan"
    assert ok(post(base, "/jmeter/create", plan)) == "Generated test plan"
    assert refused(post(base, "/jmeter/start", {"num_slaves": "some"}))[2] == "num_slaves"
    started = post(base, "/jmeter/start", headers={"Accept": "application/json"}).json()
    assert started["message"] == f"Started jmeter on pid: {started['pid']}"
    status_ = wait_until(lambda: (s := get(base, "/jmeter/status").json())["done"] and s, 180, what="the load test")
    assert (status_["state"], status_["run_id"], status_["samples"], status_["errors"]) == (
        "finished", started["run_id"], 2, 0)  # fmt: skip
    log = ok(get(base, "/jmeter/results/log"))
    assert log.startswith("Retrieved all results\n") and "summary =      2 in" in log
    detail = ok(get(base, "/jmeter/results/detail")).splitlines()
    assert detail[0] == "Retrieved all results"
    assert detail[1].startswith("timeStamp,elapsed,label,responseCode,responseMessage,threadName")
    assert [line.split(",")[2:4] for line in detail[2:]] == [["probe", "200"], ["probe", "200"]]
    summary = get(base, "/jmeter/results/summary", headers={"Accept": "application/json"}).json()
    assert [(r["label"], r["samples"], r["errors"]) for r in summary["summary"]] == [("probe", 2, 0),
                                                                                     ("TOTAL", 2, 0)]  # fmt: skip
    assert summary["run_id"] == started["run_id"]
    assert refused(get(base, "/jmeter/stop")) == (409, "Failed to stop test: no test is running", None)


# -- uploads, JSON replies, the token, SIGTERM ------------------------------------------------


def test_by_default_a_change_needs_the_token_local_up_made(base: str, cfg: Config, store: redis.Redis) -> None:
    """The test stack runs as a default install: no CLOVER_API_TOKEN, so `local up` made one."""
    kept = secret_file(cfg.state_dir, API_TOKEN_FILE)
    assert cfg.api_token == kept.read_text().strip() and kept.stat().st_mode & 0o777 == 0o600
    body = {"services": [{"name": "clover-server2"}]}
    reply = requests.post(base + "/visibility/set", json=body, timeout=30)
    assert refused(reply) == (401, "this route changes state and needs the API token: send Authorization: Bearer "
                                   "<CLOVER_API_TOKEN>", None)  # fmt: skip
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert refused(requests.get(base + "/collector/stop", timeout=30))[0] == 401
    assert store.scard(keys.VISIBILITY_SERVICES) == 0
    bearer = {"Authorization": f"Bearer {cfg.api_token}"}
    assert ok(requests.post(base + "/visibility/set", json=body, headers=bearer, timeout=30)) == (
        "Updated visibility config"
    )
    assert requests.get(base + "/visibility/get/services", timeout=30).json() == {  # reading needs none
        "visibility_services": ["clover_server2"]
    }


def test_uploads_are_recorded_and_listed(base: str, store: redis.Redis) -> None:
    form = {
        "file1.name": "clover.png",
        "file1.path": "/var/www/html/upload/0000000001",
        "file1.server": "clover-server1",
        "upload.name": "a.txt",
        "upload.path": "/var/www/html/upload/0000000002",
        "upload.server": "clover-server2",
        "description": "two files",
    }
    assert ok(controller_client.post(base + "/upload", data=form, timeout=10)) == "Uploaded file(s) successfully"
    assert get(base, "/upload/get").json() == ["a.txt:/var/www/html/upload/0000000002:clover-server2",
                                               "clover.png:/var/www/html/upload/0000000001:clover-server1"]  # fmt: skip
    reply = controller_client.post(base + "/upload", data={"file2.name": "b", "file2.server": "s"}, timeout=10)
    assert refused(reply) == (400, "Unable to write file metadata: file2.path: is required", "file2.path")


def assert_uploads_reach_a_guarded_controller(guarded: Config, store: redis.Redis) -> None:
    """A server of the chain started with the same token passes its uploads on with it."""
    from dataclasses import replace

    from sdc import local as sdc_local
    from sdc import topology
    from stack.launcher import Launcher as _Launcher

    offset = guarded.controller_port - 8000
    server_cfg = replace(
        guarded,
        sdc_mode="loopback",
        sdc_subnet=f"127.179.{100 + offset // 1000 % 100}.0/24",
        sdc_stats_port=25290 + offset,
        state_dir=guarded.state_dir / "sdc",
    )
    server = _Launcher(server_cfg, {"clover-server1": sdc_local.part(server_cfg, "clover-server1")}, groups={},
                       default=["clover-server1"])  # fmt: skip
    store.delete(keys.UPLOAD_METADATA)
    server.up(["clover-server1"])
    try:
        upload = f"http://{topology.pod_ip(server_cfg, 'clover-server1')}:9180/upload"
        answer = requests.post(upload, files={"file1": ("guarded.txt", b"abc", "text/plain")}, timeout=10)
        assert (answer.status_code, answer.text) == (200, "Uploaded file(s) successfully")
        assert "X-Clover-Controller" not in answer.headers
        [recorded] = get(guarded.controller_url, "/upload/get").json()
        assert recorded.startswith("guarded.txt:") and recorded.endswith(":clover-server1")
    finally:
        server.down()
        store.delete(keys.UPLOAD_METADATA)


def test_a_controller_with_a_token_refuses_changes_without_it_and_stops_cleanly_on_sigterm(
    stack: Launcher, cfg: Config, store: redis.Redis
) -> None:
    from dataclasses import replace

    from controller.local import controller_part
    from stack.launcher import Launcher as _Launcher

    guarded = replace(
        cfg,
        controller_url=f"http://127.0.0.1:{cfg.controller_port + 7}",
        api_token="it-s3cret",
        state_dir=cfg.state_dir / "guarded-controller",
    )
    launcher = _Launcher(guarded, {"controller": controller_part(guarded)}, groups={}, default=["controller"])
    launcher.up(["controller"])
    try:
        url = guarded.controller_url
        body = {"services": [{"name": "proxy-access-control"}]}
        assert refused(post(url, "/visibility/set", body))[0] == 401
        assert refused(post(url, "/visibility/set", body, headers={"Authorization": "Bearer wrong"}))[0] == 403
        assert ok(post(url, "/visibility/set", body, headers={"Authorization": "Bearer it-s3cret"})) == (
            "Updated visibility config"
        )
        assert get(url, "/visibility/get/services").json() == {"visibility_services": ["proxy_access_control"]}
        assert_uploads_reach_a_guarded_controller(guarded, store)
        proc = launcher.process("controller")
        assert proc is not None
    finally:
        started = time.monotonic()
        launcher.down(["controller"])
    assert time.monotonic() - started < 10
    assert not proc.is_running() or proc.status() == "zombie"
    assert launcher.tail("controller", 5).rstrip().endswith("INFO controller: stopped")
