"""The dashboard in headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium), served by the controller running as a part of the test stack: the page shows the
results the test wrote to Redis, the Discovered Services selection sets ``visibility_services``,
Clear clears, and the load balancer control changes the live sample chain. A screenshot of the
loaded dashboard is saved as ``artifacts/dashboard.png``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from clover import keys
from clover.config import Config
from sdc import topology
from stack.launcher import Launcher
from tests import controller_client
from tests.e2e.browser import cells, checkbox, click_option, log_in, open_page, open_tab, screenshot, text, trace
from tests.integration.controller_parts import flush_visibility, running
from tests.waiting import wait_until

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def parts(stack: Launcher) -> Iterator[Launcher]:
    with running(stack, ["controller", "collector", "sdc"]) as launcher:
        yield launcher


@pytest.fixture(scope="module")
def store(flushed_store: redis.Redis) -> redis.Redis:
    return flushed_store


def seed(store: redis.Redis) -> None:
    """Results as the analytics publish them: two tracked services, four URLs, two user agents."""
    flush_visibility(store)
    store.sadd(keys.VISIBILITY_SERVICES, "proxy_access_control", "clover_server1")
    store.sadd(keys.TRACING_SERVICES, "proxy-access-control", "clover-server1", "snort-ids")
    store.mset({keys.TRACE_COUNT: "31", keys.SPAN_COUNT: "124", keys.METRIC_COUNT: "40"})
    store.hset("proxy-access-control", mapping={
        "min_rt": "1.00", "avg_rt": "5.00", "max_rt": "90.00", "p50_rt": "4.00", "p90_rt": "9.00", "p99_rt": "60.00",
        "p999_rt": "90.00", "request_count": "200", "errors_4xx": "2", "errors_5xx": "4", "error_rate": "0.0300",
        "error_rate_4xx": "0.0100", "error_rate_5xx": "0.0200", "request_rate": "3.33",
        "source": "jaeger"})  # fmt: skip
    store.hset("proxy-access-control:source:clovisor", mapping={
        "min_rt": "1.10", "avg_rt": "5.20", "max_rt": "91.00", "p50_rt": "4.10", "p90_rt": "9.20", "p99_rt": "61.00",
        "p999_rt": "91.00", "request_count": "198", "error_rate": "0.0303", "request_rate": "3.30",
        "source": "clovisor"})  # fmt: skip
    store.hset("clover-server1", mapping={
        "min_rt": "0.50", "avg_rt": "1.20", "max_rt": "7.00", "p50_rt": "1.00", "p90_rt": "2.00", "p99_rt": "6.00",
        "request_count": "60", "error_rate": "0.0000", "error_rate_4xx": "0", "error_rate_5xx": "0",
        "source": "jaeger"})  # fmt: skip
    store.zadd(keys.SPAN_URLS_Z, {"/": 90, "/a": 30, "/b": 3, "/c": 1})
    store.sadd(keys.SPAN_URLS, "/", "/a", "/b", "/c")
    store.zadd(keys.SPAN_USER_AGENT_Z, {"chrome": 30, "safari": 10})
    store.sadd(keys.SPAN_USER_AGENT, "chrome", "safari")
    store.zadd(keys.SPAN_NODE_ID_Z, {"proxy-access-control-1.default": 100, "clover-server1-1.default": 24})
    store.zadd(keys.SPAN_STATUS_CODES_Z, {"200, /": 88, "500, /": 2})
    store.sadd(keys.METRIC_PREFIXES, "envoy_cluster_outbound_9180__")
    store.sadd(keys.METRIC_SUFFIXES, "_rq_2xx")
    store.rpush("metrics_envoy_cluster_outbound_9180__proxy_access_control_rq_2xx", "1", "4", "9")
    store.set("envoy_cluster_outbound_9180__proxy_access_control_rq_2xx", "9")
    store.sadd(keys.PUBLISHED_KEYS, "proxy-access-control", "clover-server1", *keys.CLEARED_SETS_AND_ZSETS,
               "metrics_envoy_cluster_outbound_9180__proxy_access_control_rq_2xx")  # fmt: skip


def open_dashboard(driver: WebDriver, cfg: Config, path: str = "/visibility") -> None:
    """Load the dashboard until it shows the seeded counts."""
    open_page(driver, cfg.controller_url + path, lambda: text(driver, "count-traces") == "31",
              "the system counts on the page")  # fmt: skip
    log_in(driver, cfg)


def test_the_page_shows_the_seeded_results_and_a_screenshot_is_saved(
    browser: WebDriver, store: redis.Redis, cfg: Config
) -> None:
    seed(store)
    open_dashboard(browser, cfg)
    assert [text(browser, f"count-{n}") for n in ("traces", "spans", "metrics")] == ["31", "124", "40"]
    assert cells(browser, "rt-table-grid") == [
        ["clover-server1", "60", "0.50", "1.20", "7.00", "1.00", "2.00", "6.00", "—", "0.00%", "—", "jaeger", "logs"],
        ["proxy-access-control", "200", "1.00", "5.00", "90.00", "4.00", "9.00", "60.00", "90.00", "3.00%", "3.33",
         "jaeger", "logs"],
    ]  # fmt: skip
    urls = wait_until(lambda: trace(browser, "per-url-chart"), 20, what="the per-URL chart")
    assert (urls["y"], urls["x"]) == (["/c", "/b", "/a", "/"], [1, 3, 30, 90])
    p99 = wait_until(lambda: trace(browser, "latency-chart", 2), 20, what="the latency chart")
    assert (p99["name"], p99["x"], p99["y"]) == ("p99", ["proxy-access-control", "clover-server1"], [60, 6])
    errors_5xx = trace(browser, "error-chart", 1)
    assert errors_5xx is not None and errors_5xx["y"] == [2, 0]
    pie = trace(browser, "user-agent-chart")
    assert pie is not None and (pie["labels"], pie["values"]) == (["chrome", "safari"], [75, 25])
    nodes = trace(browser, "per-service-chart")
    assert nodes is not None and nodes["x"] == [24, 100]
    status = trace(browser, "per-status-chart")
    assert status is not None and status["y"] == ["500, /", "200, /"]
    assert cells(browser, "metrics-table-grid") == [
        ["envoy_cluster_outbound_9180__clover_server1_rq_2xx", "—"],
        ["envoy_cluster_outbound_9180__proxy_access_control_rq_2xx", "9"],
    ]
    series = browser.execute_script(
        "return [...document.querySelectorAll('#metric-plots .js-plotly-plot')]"
        ".map(p => p.data.map(t => [t.type, t.y]))"
    )
    assert series == [[["scattergl", [1, 4, 9]]]]
    screenshot(browser, "dashboard")
    # The figures as Clovisor measured them: the proxy's network view; clover-server1 has none.
    click_option(browser, "figures-source", "clovisor")
    wait_until(lambda: cells(browser, "rt-table-grid") == [
        ["clover-server1", *["—"] * 11, "logs"],
        ["proxy-access-control", "198", "1.10", "5.20", "91.00", "4.10", "9.20", "61.00", "91.00", "3.03%", "3.30",
         "clovisor", "logs"],
    ], 20, what="the Clovisor figures")  # fmt: skip


def test_selecting_services_sets_what_is_tracked_and_clear_clears(
    browser: WebDriver, store: redis.Redis, cfg: Config, parts: Launcher
) -> None:
    seed(store)
    open_dashboard(browser, cfg)
    wait_until(lambda: checkbox(browser, "services", "snort-ids").is_displayed(), 20, what="the discovered services")
    assert checkbox(browser, "services", "proxy-access-control").is_selected()
    assert not checkbox(browser, "services", "snort-ids").is_selected()
    click_option(browser, "services", "snort-ids")
    three = {"proxy_access_control", "clover_server1", "snort_ids"}
    wait_until(lambda: store.smembers(keys.VISIBILITY_SERVICES) == three, 20, what="snort_ids tracked")
    click_option(browser, "services", "clover-server1")
    click_option(browser, "services", "proxy-access-control")
    wait_until(lambda: store.smembers(keys.VISIBILITY_SERVICES) == {"snort_ids"}, 20, what="only snort_ids tracked")
    wait_until(lambda: "Tracking 1 service(s)" in text(browser, "services-result"), 20, what="the reply")
    # Unselecting the last one is refused: something must be tracked.
    click_option(browser, "services", "snort-ids")
    wait_until(lambda: "Specify at least one service to track" in text(browser, "services-result"), 20,
               what="the refusal")  # fmt: skip
    assert store.smembers(keys.VISIBILITY_SERVICES) == {"snort_ids"}
    wait_until(lambda: checkbox(browser, "services", "snort-ids").is_selected(), 20, what="the selection restored")

    browser.find_element(By.ID, "clear-button").click()
    alert = wait_until(lambda: _alert(browser), 10, what="the confirmation dialog")
    assert alert.text.startswith("Clear all visibility data?")
    alert.accept()
    wait_until(lambda: "Truncated visibility tables" in text(browser, "clear-result"), 60, what="the clear reply")
    assert store.mget(keys.TRACE_COUNT, keys.SPAN_COUNT, keys.METRIC_COUNT) == ["0", "0", "0"]
    assert [k for k in keys.CLEARED_SETS_AND_ZSETS if store.exists(k)] == []
    assert not store.exists("metrics_envoy_cluster_outbound_9180__proxy_access_control_rq_2xx")
    assert store.smembers(keys.VISIBILITY_SERVICES) == {"snort_ids"}
    wait_until(lambda: text(browser, "count-spans") == "0", 20, what="the page to show the cleared counts")
    assert trace(browser, "per-url-chart") is None


def _alert(driver: WebDriver) -> Any:
    try:
        return driver.switch_to.alert
    except NoAlertPresentException:
        return None


def served_by_v2(cfg: Config, n: int = 12) -> set[str]:
    url = f"http://{topology.pod_ip(cfg, 'proxy-access-control')}:9180/"
    servers = set()
    for _ in range(n):
        answer = requests.get(url, timeout=10)
        assert answer.status_code == 200
        if re.search(r"1\.1 http-lb-v2", answer.headers["Via"]):
            servers.add(answer.headers["X-Served-By"])
    return servers


def test_the_load_balancer_control_changes_the_live_chain(
    browser: WebDriver, store: redis.Redis, cfg: Config, parts: Launcher
) -> None:
    seed(store)
    assert served_by_v2(cfg) == {"clover-server1", "clover-server2", "clover-server3"}
    open_dashboard(browser, cfg, "/dashboard/")
    open_tab(browser, "Sample chain")
    wait_until(lambda: checkbox(browser, "http-lb-v2-servers", "clover-server3:9180").is_selected(), 30,
               what="http-lb-v2's current servers")  # fmt: skip
    assert [checkbox(browser, "http-lb-v2-servers", f"clover-server{i}:9180").is_selected() for i in range(1, 6)] == [
        True, True, True, False, False]  # fmt: skip
    try:
        for i in (1, 2, 3, 4, 5):
            click_option(browser, "http-lb-v2-servers", f"clover-server{i}:9180")
        browser.find_element(By.ID, "http-lb-v2-apply").click()
        wait_until(lambda: "Modified nginx config" in text(browser, "lb-result"), 30, what="the LB reply")
        assert text(browser, "lb-result") == (
            "http-lb-v2: Modified nginx config (clover-server4:9180, clover-server5:9180)"
        )
        assert served_by_v2(cfg) == {"clover-server4", "clover-server5"}
        v1 = requests.get(f"{cfg.controller_url}/nginx/config/http-lb-v1", timeout=10).json()
        assert v1["lb"]["slb_list"] == ["clover-server1:9180", "clover-server2:9180", "clover-server3:9180"]
    finally:
        servers = [{"url": f"clover-server{i}:9180"} for i in (1, 2, 3)]
        body = {"lb_name": "http-lb-v2.default", "server_name": "http-lb-v2", "lb_list": servers}
        controller_client.post(f"{cfg.controller_url}/nginx/lb", timeout=30, json=body)
