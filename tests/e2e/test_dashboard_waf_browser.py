"""The Sample chain tab's WAF panel in headless Chromium: with the real Apache, ModSecurity and
Core Rule Set in front of the sample chain (``CLOVER_WAF=on``), a normal request and a SQL
injection the test sends through proxy-access-control show on the page as the proxy's check
counts and as the alert Redis holds, row for row."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from clover.config import Config
from stack.launcher import Launcher
from tests.e2e.browser import cells, log_in, open_page, open_tab, screenshot, text
from tests.integration.controller_parts import running
from tests.integration.test_sdc_chain import PROXY, url
from tests.integration.test_waf import SQLI, chain_behind_the_waf, client_ip, event_ids, ext_authz, new_events
from tests.waiting import wait_until

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def waf_chain(stack: Launcher, cfg: Config) -> Iterator[Config]:
    with chain_behind_the_waf(cfg) as on:
        yield on


@pytest.fixture(scope="module")
def parts(stack: Launcher, waf_chain: Config) -> Iterator[Launcher]:
    with running(stack, ["controller"]) as launcher:
        yield launcher


def status_line(counts: dict[str, float], alerts: int, shown: int) -> str:
    return (f"CRS anomaly mode, paranoia level 1; checks at the proxy (fail-closed): ok {counts['ok']:.0f}, "
            f"denied {counts['denied']:.0f}, error {counts['error']:.0f}, let through on error "
            f"{counts['failure_mode_allowed']:.0f}. {alerts} alert(s); the newest {shown}:")  # fmt: skip


def test_the_waf_panel_shows_the_check_counts_and_the_alert_of_a_refused_request(
    parts: Launcher, browser: WebDriver, waf_chain: Config
) -> None:
    store = redis.Redis.from_url(waf_chain.redis_url, decode_responses=True)
    before = event_ids(store)
    assert requests.get(url(waf_chain, PROXY, "/"), timeout=10).status_code == 200
    refused = requests.get(url(waf_chain, PROXY, SQLI), timeout=10)
    assert refused.status_code == 403
    (event,) = new_events(store, before, 1)
    counts = ext_authz(waf_chain)
    assert (counts["ok"], counts["denied"], counts["error"], counts["failure_mode_allowed"]) == (1, 1, 0, 0)

    open_page(browser, waf_chain.controller_url + "/dashboard/", lambda: browser.find_elements(By.CSS_SELECTOR, ".tab"),
              "the dashboard's tabs")  # fmt: skip
    log_in(browser, waf_chain)
    open_tab(browser, "Sample chain")
    total = len(before) + 1
    expected = status_line(counts, total, min(total, 20))
    wait_until(lambda: text(browser, "waf-status") == expected, 60, what=f"the WAF panel to show {expected!r}")

    sent = requests.Request("GET", url(waf_chain, PROXY, SQLI)).prepare().path_url
    when = datetime.fromtimestamp(float(event["event-second"]), UTC).strftime("%Y-%m-%d %H:%M:%S")
    row = [event["event-id"], when, client_ip(waf_chain), f"GET {sent}", "949110", event["msg"], "5", "yes",
           "942100,949110,980130"]  # fmt: skip
    wait_until(lambda: cells(browser, "waf-grid")[:1] == [row], 30, what="the SQL injection's alert in the WAF panel")
    screenshot(browser, "dashboard-waf")
