"""The dashboard's Sample chain and Validation tabs in headless Chromium, against the controller,
the sample chain and the validation service (real JMeter) running as parts of the test stack.

Sample chain: Stop IDS and Start IDS show the controller's replies and really stop and start
snort-ids' engine (read back with sdc's gRPC client); a rule typed into the textarea is listed on
the page and by snort-ids, a bad one is refused with the field named and changes nothing, and
after a restart a request through the proxy with the rule's content raises an alert that the
Recent IDS alerts table shows. Validation: a small JMeter plan the test makes, run through the
controller's REST API, appears with its state, exact sample counts and latency plot."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psutil
import pytest
import redis
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from clover import keys
from clover.config import Config
from sdc import grpc_client as sdc
from sdc import topology
from sdc.external_clients import ExternalClients
from stack.launcher import Launcher
from tests import controller_client
from tests.e2e.browser import cells, log_in, open_page, open_tab, screenshot, text, trace
from tests.integration.controller_parts import CHAIN, running
from tests.waiting import wait_until

pytestmark = pytest.mark.browser

PROXY = "proxy-access-control"
SID = "10000917"
MSG = "CLOVER-E2E User-Agent dashboard probe"
AGENT = "clover-e2e-dashboard-probe"
RULE = f"""\
sid: "{SID}"
protocol: tcp
dest_port: any
dest_ip: $HOME_NET
src_port: any
src_ip: any
msg: {MSG}
rev: "2"
content: '"{AGENT}"'
"""
RULE_TEXT = f'alert tcp any any -> $HOME_NET any (msg:"{MSG}"; content:"{AGENT}"; sid:{SID}; rev:2;)'
RULE_FIELDS = "content, dest_ip, dest_port, msg, protocol, rev, rule, sid, src_ip, src_port"
BAD_RULES = [
    (RULE.replace(f'sid: "{SID}"', 'sid: "917x"'),
     "Failed to add to local rules: sid '917x' must be a positive number"),
    (RULE.replace("msg:", "mesage:"),
     f"Invalid value in json/yaml: the rule spec: unknown field(s) mesage; expected {RULE_FIELDS}"),
]  # fmt: skip
STOPPED = "stopped, 0 rules loaded, 0 requests inspected, 0 alerts"


@pytest.fixture(scope="module")
def parts(stack: Launcher) -> Iterator[Launcher]:
    with running(stack, CHAIN) as launcher:
        yield launcher


@pytest.fixture(scope="module")
def clients(parts: Launcher, cfg: Config) -> Iterator[ExternalClients]:
    """A client address of its own (made before a page is loaded: a new interface aborts the page's
    requests in flight), so that the proxy's block after an alert leaves the test's host alone."""
    with ExternalClients(cfg, 1) as made:
        yield made


def open_chain(driver: WebDriver, cfg: Config) -> None:
    """The dashboard's Sample chain tab, once it shows the IDS status. A page whose requests
    Chromium aborted as interfaces appeared (net::ERR_NETWORK_CHANGED) is loaded once more."""
    for attempt in range(2):
        open_page(driver, cfg.controller_url + "/dashboard/", lambda: driver.find_elements(By.CSS_SELECTOR, ".tab"),
                  "the dashboard's tabs")  # fmt: skip
        log_in(driver, cfg)
        open_tab(driver, "Sample chain")
        try:
            wait_until(lambda: text(driver, "ids-status"), 30, what="the IDS status on the page")
            return
        except AssertionError as exc:
            log = [entry["message"][:200] for entry in driver.get_log("browser")]
            if attempt == 1 or not any("ERR_NETWORK_CHANGED" in line for line in log):
                raise AssertionError(f"{exc}; browser log: {log[-5:]}") from None


def reply(driver: WebDriver, button: str, result: str) -> tuple[str, str]:
    """Click ``button`` and wait for the reply in ``result`` to change: (its text, its class)."""
    before = text(driver, result)
    driver.find_element(By.ID, button).click()
    shown = wait_until(lambda: (t := text(driver, result)) != before and t, 60, what=f"the reply to {button}")
    return shown, str(driver.find_element(By.CSS_SELECTOR, f"#{result} > div").get_attribute("class"))


def running_line(status: dict[str, Any]) -> str:
    return (f"running (pid {status['pid']}), {status['rules_loaded']} rules loaded, "
            f"{status['requests_inspected']} requests inspected, {status['alerts']} alerts")  # fmt: skip


def page_shows_status(driver: WebDriver, expected: str) -> None:
    wait_until(lambda: text(driver, "ids-status") == expected, 30, what=f"the page to show {expected!r}")


def page_shows_current_status(driver: WebDriver, cfg: Config) -> None:
    """The page shows the engine's status as gRPC gives it, read afresh at each look: copies of
    earlier tests' requests may still be being inspected, which moves the count."""
    wait_until(lambda: text(driver, "ids-status") == running_line(sdc.snort_status(cfg)), 30,
               what="the page to show the engine's status")  # fmt: skip


def stop_and_start(driver: WebDriver, cfg: Config) -> int:
    """Stop IDS then Start IDS on the page; check each reply and the engine through gRPC. The new pid."""
    old = sdc.snort_status(cfg)
    assert old["running"] is True
    assert reply(driver, "ids-stop", "ids-result") == (f"Stopped Snort on pid: {old['pid']}, Cleared Snort logs", "ok")
    stopped = sdc.snort_status(cfg)
    assert (stopped["running"], stopped["pid"], stopped["rules_loaded"]) == (False, 0, 0)
    assert not psutil.pid_exists(old["pid"])
    page_shows_status(driver, STOPPED)

    started, kind = reply(driver, "ids-start", "ids-result")
    pid = re.fullmatch(r"Started Snort on pid: (\d+)", started)
    assert pid and kind == "ok", started
    status = sdc.snort_status(cfg)
    every = sdc.list_rules(cfg, scope="all")
    assert (status["running"], status["pid"], status["rules_loaded"]) == (True, int(pid[1]), len(every))
    assert all(r["loaded"] for r in every)
    assert psutil.Process(status["pid"]).is_running()
    page_shows_status(driver, running_line(status))
    return status["pid"]


def test_stop_and_start_ids_on_the_page_stop_and_start_the_engine(
    parts: Launcher, clients: ExternalClients, browser: WebDriver, cfg: Config
) -> None:
    open_chain(browser, cfg)
    page_shows_current_status(browser, cfg)
    pid = stop_and_start(browser, cfg)
    # Starting a running engine changes nothing.
    assert reply(browser, "ids-start", "ids-result") == ("Snort already running", "ok")
    assert (sdc.snort_status(cfg)["pid"], psutil.pid_exists(pid)) == (pid, True)


def type_rule(driver: WebDriver, rule: str) -> None:
    area = driver.find_element(By.ID, "rule-text")
    area.send_keys(Keys.CONTROL, "a")
    area.send_keys(Keys.DELETE)
    area.send_keys(rule)
    wait_until(lambda: area.get_attribute("value") == rule, 10, what="the rule in the textarea")


def forget_rule(cfg: Config) -> None:
    """Delete the test's rule from snort-ids, and from its engine, if it is there."""
    if SID in {r["sid"] for r in sdc.list_rules(cfg)}:
        sdc.delete_rules(cfg, [SID])
        sdc.stop_snort(cfg)
        sdc.start_snort(cfg)


def rule_rows(rules: list[dict[str, Any]]) -> list[list[str]]:
    return [[r["sid"], r["rev"], r["msg"], "yes" if r["loaded"] else "no"] for r in rules]


def test_a_rule_added_on_the_page_is_listed_and_after_a_restart_its_alert_is_shown(
    parts: Launcher, clients: ExternalClients, browser: WebDriver, cfg: Config, store: redis.Redis
) -> None:
    forget_rule(cfg)  # left by a run that was killed
    earlier = sdc.list_rules(cfg)
    open_chain(browser, cfg)
    try:
        type_rule(browser, RULE)
        assert reply(browser, "rule-add", "rule-result") == ("Added to local rules", "ok")
        added = {"sid": SID, "rev": "2", "msg": MSG, "text": RULE_TEXT, "file": "local.rules", "loaded": False}
        assert sdc.list_rules(cfg) == [*earlier, added]
        wait_until(lambda: cells(browser, "rules-grid") == rule_rows([*earlier, added]), 30,
                   what="the new rule in the Local rules table")  # fmt: skip

        for bad, refusal in BAD_RULES:
            type_rule(browser, bad)
            assert reply(browser, "rule-add", "rule-result") == (refusal, "error")
            assert sdc.list_rules(cfg) == [*earlier, added]
            assert cells(browser, "rules-grid") == rule_rows([*earlier, added])

        stop_and_start(browser, cfg)
        loaded = {**added, "loaded": True}
        assert sdc.list_rules(cfg) == [*(r | {"loaded": True} for r in earlier), loaded]
        wait_until(lambda: cells(browser, "rules-grid")[-1:] == rule_rows([loaded]), 30,
                   what="the rule loaded in the Local rules table")  # fmt: skip

        known = store.smembers(keys.SNORT_EVENTS)
        proxy = topology.pod_ip(cfg, PROXY)
        answer = clients.request(0, f"http://{proxy}:{topology.ports(PROXY)['http']}/", headers={"User-Agent": AGENT})
        assert answer.status == 200
        settled = wait_until(lambda: (s := sdc.snort_status(cfg))["requests_inspected"] >= 1 and not s["alerts_pending"]
                             and s, 30, what="the IDS to inspect the request and store its alert")  # fmt: skip
        assert (settled["requests_inspected"], settled["alerts"]) == (1, 1)
        new = store.smembers(keys.SNORT_EVENTS) - known
        assert len(new) == 1
        names = ("event-id", "event-second", "signature-id", "signature-revision", "msg", "source-ip", "sport-itype",
                 "destination-ip", "dport-icode")  # fmt: skip
        event = dict(zip(names, store.hmget(keys.snort_event(next(iter(new))), names), strict=True))
        assert (event["signature-id"], event["signature-revision"], event["msg"]) == (SID, "2", MSG)
        assert (event["source-ip"], event["destination-ip"], event["dport-icode"]) == (clients.ips[0], proxy, "9180")
        when = datetime.fromtimestamp(int(event["event-second"]), UTC).strftime("%Y-%m-%d %H:%M:%S")
        row = [event["event-id"], when, MSG, f"1:{SID}:2", "0",
               f"{clients.ips[0]}:{event['sport-itype']} → {proxy}:9180", "0"]  # fmt: skip
        wait_until(lambda: cells(browser, "alerts-grid")[:1] == [row], 30, what="the alert in Recent IDS alerts")
        total = store.scard(keys.SNORT_EVENTS)
        wait_until(lambda: text(browser, "alerts-count").startswith(f"{total} alert(s) in Redis;"), 30,
                   what="the alert count")  # fmt: skip
        screenshot(browser, "dashboard-chain")
    finally:
        forget_rule(cfg)


def test_the_validation_tab_shows_the_load_test_the_test_ran(parts: Launcher, browser: WebDriver, cfg: Config) -> None:
    base = cfg.controller_url
    chain = f"http://{PROXY}.default:{topology.ports(PROXY)['http']}"
    urls = [
        {"name": "e2e-root", "url": chain + "/", "method": "GET", "user-agent": "clover-e2e-jmeter"},
        {"name": "e2e-about", "url": chain + "/about.html", "method": "GET", "user-agent": "clover-e2e-jmeter"},
    ]
    plan = {"load_spec": {"num_threads": 2, "loops": 3}, "url_list": urls}
    made = controller_client.post(base + "/jmeter/create?name=e2e-dashboard", json=plan, timeout=120)
    assert (made.status_code, made.text) == (200, "Generated test plan")

    open_page(browser, base + "/dashboard/", lambda: browser.find_elements(By.CSS_SELECTOR, ".tab"),
              "the dashboard's tabs")  # fmt: skip
    open_tab(browser, "Validation")
    wait_until(lambda: text(browser, "val-status"), 30, what="the load test state on the page")

    started = controller_client.post(base + "/jmeter/start", json={"test_plan": "e2e-dashboard.jmx"},
                            headers={"Accept": "application/json"}, timeout=120).json()  # fmt: skip
    assert started["message"] == f"Started jmeter on pid: {started['pid']}"
    status = wait_until(lambda: (s := requests.get(base + "/jmeter/status", timeout=30).json())["done"] and s, 180,
                        what="the load test to finish")  # fmt: skip
    assert (status["run_id"], status["state"], status["samples"], status["errors"]) == (started["run_id"], "finished",
                                                                                         12, 0)  # fmt: skip

    line = f"Run {started['run_id']} (e2e-dashboard.jmx): finished, 12 samples, 0 errors"
    wait_until(lambda: text(browser, "val-status") == line, 60, what="the finished run on the page")
    assert [row[:4] for row in cells(browser, "summary-grid")] == [
        ["e2e-root", "6", "0", "0.00%"], ["e2e-about", "6", "0", "0.00%"], ["TOTAL", "12", "0", "0.00%"]]  # fmt: skip

    detail = requests.get(base + "/jmeter/results/detail?format=json", headers={"Accept": "application/json"},
                          timeout=30).json()  # fmt: skip
    samples = json.loads(detail["content"])
    assert detail["run_id"] == started["run_id"] and len(samples) == 12
    plotted = [trace(browser, "val-latency", i) for i in range(2)]
    assert [(t["name"], t["type"], t["mode"]) for t in plotted if t] == [
        ("e2e-about", "scatter", "markers"), ("e2e-root", "scatter", "markers")]  # fmt: skip
    for shown in plotted:
        assert shown is not None
        own = sorted((s for s in samples if s["label"] == shown["name"]), key=lambda s: s["timestamp"])
        assert shown["y"] == [s["elapsed"] for s in own]
        assert shown["x"] == [datetime.fromtimestamp(s["timestamp"] / 1000, UTC).isoformat() for s in own]
    assert trace(browser, "val-latency", 2) is None
    assert len(browser.find_elements(By.CSS_SELECTOR, "#val-latency .scatterlayer .point")) == 12
    screenshot(browser, "dashboard-validation")
