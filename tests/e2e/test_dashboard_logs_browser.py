"""The dashboard's links into the logs, in headless Chromium: the slowest request of the last hour
links to its entries and its service's; a service's "logs" link in the response-time table opens
that service's access-log entries from the real store, and a trace id there opens every hop of
that request. The entries are written by the test into the pods' log
directory and shipped by the real shipper."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from clover.config import Config
from logstore.local import GROUP
from logstore.query import LogFilter, LogStore
from logstore.settings import LogSettings
from sdc.accesslog import AccessEntry, AccessLog, timestamp
from stack.launcher import Launcher
from tests.e2e.browser import open_page, screenshot
from tests.e2e.test_dashboard_browser import open_dashboard, seed
from tests.integration.controller_parts import running
from tests.waiting import wait_until

pytestmark = pytest.mark.browser
SERVER, LB = "clover-server1", "http-lb-v1"


@pytest.fixture(scope="module")
def parts(stack: Launcher) -> Iterator[Launcher]:
    """The controller and a logging group that has shipped nothing yet."""
    stack.down(["sdc", GROUP])
    shutil.rmtree(LogSettings.from_env(os.environ).access_log_dir, ignore_errors=True)
    stack.up([GROUP], fresh=True)
    with running(stack, ["controller"]) as launcher:
        yield launcher
    stack.down([GROUP])


@pytest.fixture(scope="module")
def store(flushed_store: redis.Redis) -> redis.Redis:
    return flushed_store


def hop(pod: str, source: str, destination: str, trace_id: str, n: int, agent: str) -> AccessEntry:
    return AccessEntry(time=timestamp(time.time()), stream=LogSettings.from_env(os.environ).stream, pod=pod,
                       source=source, user=source, destination=destination, responseCode=200, responseSize=100 + n,
                       latency=1.0 + n, method="GET", url=f"http://{destination}:9180/item/{n}", userAgent=agent,
                       traceId=trace_id, spanId=f"{n:016x}", requestId=str(n))  # fmt: skip


def write_requests(count: int) -> list[str]:
    """``count`` requests as the lb and the server log them: their trace ids, once in the store."""
    settings = LogSettings.from_env(os.environ)
    agent = f"dashboard-logs-test/{uuid.uuid4().hex}"
    traces = [uuid.uuid4().hex for _ in range(count)]
    logs = {pod: AccessLog(settings.access_log_dir, pod, settings.access_log_max_bytes) for pod in (SERVER, LB)}
    for n, trace_id in enumerate(traces):
        logs[SERVER].write(hop(SERVER, "http-lb", SERVER, trace_id, 2 * n, agent))
        logs[LB].write(hop(LB, "proxy-access-control", "http-lb", trace_id, 2 * n + 1, agent))
    for log in logs.values():
        log.close()
    store = LogStore(settings.store_url)
    where = LogFilter(user_agent=agent, stream=settings.stream)
    wait_until(lambda: len(store.search(where)) == 2 * count, 60, 0.25, f"{2 * count} entries in the store")
    return traces


def column(driver: WebDriver, index: int) -> list[str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#logs tbody tr")
    return [r.find_elements(By.TAG_NAME, "td")[index].text for r in rows]


def test_a_services_logs_link_opens_its_entries_and_a_trace_id_that_requests_hops(
    browser: WebDriver, store: redis.Redis, cfg: Config
) -> None:
    traces = write_requests(5)
    seed(store)
    open_dashboard(browser, cfg)
    # The slowest request is the last one, at the lb (latency 1 + 2n + 1, the highest of its hops).
    slowest = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#slowest tbody tr:first-child a"), 20,
                         what="the slowest requests' table")  # fmt: skip
    assert [a.get_attribute("href") for a in slowest] == [
        f"{cfg.controller_url}/logs?trace={traces[-1]}&format=html",
        f"{cfg.controller_url}/logs?service=http-lb&since=1h&format=html",
    ]
    link = wait_until(
        lambda: next(iter(browser.find_elements(By.XPATH, f"//tr[td[1]='{SERVER}']//a[text()='logs']")), None),
        20, what=f"the logs link of {SERVER}",
    )  # fmt: skip
    assert link.get_attribute("href") == f"{cfg.controller_url}/logs?service={SERVER}&since=1h&format=html"
    link.click()
    open_page(browser, browser.current_url, lambda: browser.find_elements(By.ID, "count"), "the service's logs")
    assert browser.find_element(By.TAG_NAME, "h1").text == f"Logs of service {SERVER}"
    assert browser.find_element(By.ID, "count").text == "5 entries, oldest first"
    assert column(browser, 1) == [SERVER] * 5
    assert column(browser, 10) == traces
    screenshot(browser, "dashboard-logs")
    browser.find_element(By.LINK_TEXT, traces[2]).click()
    wait_until(lambda: browser.find_element(By.TAG_NAME, "h1").text == f"Logs of trace {traces[2]}", 20,
               what="the trace's logs")  # fmt: skip
    assert browser.find_element(By.ID, "count").text == "2 entries, oldest first"
    assert column(browser, 1) == [SERVER, LB]
    assert column(browser, 10) == [traces[2]] * 2
