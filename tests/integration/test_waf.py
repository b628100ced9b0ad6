"""The WAF in front of the sample chain, against the real Apache, ModSecurity and Core Rule Set:
proxy-access-control asks modsecurity-crs about each request (``CLOVER_WAF=on``); attacks are
refused with 403 and recorded, with the CRS rule ids, in the audit log and in Redis; the CRS mode
decides which rule refuses; a WAF that cannot answer refuses (fail-closed) or lets requests in
(fail-open), counted; the controller and cloverctl show the alerts, the audit log and the counts;
the original guide's JMeter plan passes through the WAF. The pods run with `cloverctl local`'s
parts beside Redis and Jaeger only.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import requests

from clover import keys
from clover.config import Config
from logstore.settings import LogSettings
from sdc import grpc_client, topology
from sdc.waf.check import ext_authz_metric
from stack.catalogue import local_stack
from tests.integration.test_sdc_chain import NETNS, PROXY, _jaeger_trace, stats, url, wait_for
from tests.integration.test_validation_jmeter import CONTROLLER_URL, GRPC, GUIDE_YAML, RMI_PORT
from tests.integration.test_validation_jmeter import cloverctl as jmeter_cloverctl
from validation.results import parse_jtl

WAF = "modsecurity-crs"
BACKENDS = ["redis", "jaeger"]
SQLI = "/?id=1' OR '1'='1"


def ext_authz(cfg: Config) -> dict[str, float]:
    metrics = stats(cfg, PROXY)
    return {o: metrics[ext_authz_metric(PROXY, o)] for o in ("ok", "denied", "error", "failure_mode_allowed")}


def restart(cfg: Config, pods: list[str], **settings: Any) -> Config:
    """The pods restarted with other WAF settings; returns the configuration they now run with."""
    changed = dataclasses.replace(cfg, **settings)
    launcher = local_stack(changed)
    launcher.down(pods)
    launcher.up(pods)
    if PROXY in pods:
        assert grpc_client.modify_proxy(changed, {"mirror_path": "off"}) == "Modified nginx config"
    return changed


@contextmanager
def chain_behind_the_waf(cfg: Config) -> Iterator[Config]:
    """The sample chain started fresh with the proxy's WAF check on (and Redis and Jaeger if they
    were not running); stopped again afterwards. Yields the configuration the pods run with."""
    on = dataclasses.replace(cfg, waf_check=True)
    launcher = local_stack(on)
    started = [p.name for p in launcher.select(BACKENDS) if launcher.process(p.name) is None]
    launcher.up(BACKENDS)
    launcher.up(["sdc"], fresh=True)
    try:
        # No copies to the IDS: its alerts would block this process's address at the proxy.
        assert grpc_client.modify_proxy(on, {"mirror_path": "off"}) == "Modified nginx config"
        yield on
    finally:
        launcher.down(["sdc", *started])


@pytest.fixture(scope="module")
def waf_chain(cfg: Config) -> Iterator[Config]:
    with chain_behind_the_waf(cfg) as on:
        yield on


@pytest.fixture(scope="module")
def store(waf_chain: Config) -> redis.Redis:
    return redis.Redis.from_url(waf_chain.redis_url, decode_responses=True)


def client_ip(cfg: Config) -> str:
    """The address the proxy sees this process's requests come from."""
    return topology.gateway_ip(cfg) if NETNS else "127.0.0.1"


def event_ids(store: redis.Redis) -> set[str]:
    return {str(i) for i in store.smembers(keys.WAF_EVENTS)}


def fields(store: redis.Redis, key: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in store.hgetall(key).items()}


def new_events(store: redis.Redis, before: set[str], count: int) -> list[dict[str, str]]:
    def probe() -> list[str]:
        fresh = sorted(event_ids(store) - before, key=int)
        return fresh if len(fresh) >= count else []

    ids = wait_for(f"{count} new WAF alerts in Redis", probe)
    assert len(ids) == count, ids
    return [fields(store, keys.waf_event(i)) for i in ids]


def audit_entry(store: redis.Redis, transaction_id: str) -> dict[str, Any]:
    for raw in store.lrange(keys.WAF_AUDIT_LOG, 0, -1):
        entry: dict[str, Any] = json.loads(raw)
        if entry["transaction"]["transaction_id"] == transaction_id:
            return entry
    raise AssertionError(f"no audit entry {transaction_id} in {keys.WAF_AUDIT_LOG}")


ATTACKS = [
    # (what, path, headers, the rule that decided, every CRS rule that matched, anomaly score)
    ("SQL injection", SQLI, {}, "949110", "942100,949110,980130", 5),
    ("XSS", "/?q=<script>alert(1)</script>", {}, "949110", "941100,941110,941160,949110,980130", 15),
    ("path traversal", "/?file=../../../../etc/passwd", {}, "949110",
     "930100,930110,930120,932160,949110,980130", 40),
    ("scanner", "/", {"User-Agent": "Nikto"}, "949110", "913100,949110,980130", 5),
]  # fmt: skip


@pytest.mark.parametrize(("what", "path", "headers", "decided", "rules", "score"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_attack_is_refused_and_recorded_with_its_rule_ids(
    waf_chain: Config, store: redis.Redis, what: str, path: str, headers: dict[str, str], decided: str, rules: str,
    score: int,
) -> None:  # fmt: skip
    before_events = event_ids(store)
    before = ext_authz(waf_chain)
    response = requests.get(url(waf_chain, PROXY, path), headers=headers, timeout=10)
    assert response.status_code == 403, response.text
    assert "web application firewall" in response.text
    assert ext_authz(waf_chain) == {**before, "denied": before["denied"] + 1}
    (event,) = new_events(store, before_events, 1)
    trace_id = response.headers["traceresponse"].split("-")[1]
    sent = requests.Request("GET", url(waf_chain, PROXY, path)).prepare().path_url
    assert {k: event[k] for k in ("rule-id", "rules", "anomaly-score", "blocked", "status", "client-ip", "method",
                                  "url", "trace-id")} == {
        "rule-id": decided, "rules": rules, "anomaly-score": str(score), "blocked": "1", "status": "403",
        "client-ip": client_ip(waf_chain), "method": "GET", "url": sent, "trace-id": trace_id,
    }  # fmt: skip
    assert event["msg"].startswith("Inbound Anomaly Score Exceeded (Total Score: ")
    waf_log = LogSettings.from_env(os.environ).access_log_dir / f"{WAF}.log"
    logged = [e for e in map(json.loads, waf_log.read_text().splitlines()) if e["traceId"] == trace_id]
    assert [(e["kind"], e["ruleId"], e["rules"], e["anomalyScore"], e["blocked"], e["responseCode"], e["eventId"])
            for e in logged] == [("alert", decided, rules, score, True, 403, int(event["event-id"]))]  # fmt: skip
    entry = audit_entry(store, event["transaction-id"])
    assert entry["request"]["request_line"] == f"GET {sent} HTTP/1.1"
    matched = [m.split('[id "', 1)[1].split('"', 1)[0] for m in entry["audit_data"]["messages"]]
    assert [m for m in dict.fromkeys(matched) if m not in ("10100", "10101")] == rules.split(",")
    audit_file = waf_chain.state_dir / WAF / "logs" / "audit.log"
    assert event["transaction-id"] in audit_file.read_text()


def test_a_normal_request_passes_the_waf_and_raises_no_alert(waf_chain: Config, store: redis.Redis) -> None:
    before_events = event_ids(store)
    before = ext_authz(waf_chain)
    for _ in range(3):
        response = requests.get(url(waf_chain, PROXY, "/about.html"), timeout=10)
        assert response.status_code == 200, response.text
    assert ext_authz(waf_chain) == {**before, "ok": before["ok"] + 3}
    posted = requests.post(url(waf_chain, PROXY, "/upload"), json={"name": "clover", "count": 2}, timeout=10)
    assert posted.status_code != 403, posted.text
    assert ext_authz(waf_chain)["ok"] == before["ok"] + 4
    published = str(int(before["ok"]) + 4)

    def check_counts() -> dict[str, str]:
        counts = fields(store, keys.WAF_CHECK)
        return counts if counts.get("ok") == published else {}

    check = wait_for("the proxy to publish its check counts", check_counts)
    assert (check["enabled"], check["failure_mode"]) == ("1", "closed")
    assert set(store.smembers(keys.WAF_EVENTS)) == before_events


def test_a_body_is_checked_up_to_the_bound(waf_chain: Config, store: redis.Redis) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    attack = "id=1' OR '1'='1"
    before_events = event_ids(store)
    response = requests.post(url(waf_chain, PROXY, "/upload"), data=attack, headers=form, timeout=10)
    assert response.status_code == 403
    (event,) = new_events(store, before_events, 1)
    assert (event["method"], event["rule-id"], event["rules"]) == ("POST", "949110", "942100,949110,980130")
    try:
        limited = restart(waf_chain, [PROXY], waf_body_limit=64)
        before = ext_authz(limited)
        padded = f"pad={'a' * 60}&{attack}"  # the attack starts past the first 64 bytes
        response = requests.post(url(limited, PROXY, "/upload"), data=padded, headers=form, timeout=10)
        assert response.status_code != 403, response.text
        assert ext_authz(limited) == {**before, "ok": before["ok"] + 1}
        response = requests.post(url(limited, PROXY, "/upload"), data=attack, headers=form, timeout=10)
        assert response.status_code == 403
    finally:
        restart(waf_chain, [PROXY])


def test_the_check_is_a_span_of_the_request(waf_chain: Config) -> None:
    response = requests.get(url(waf_chain, PROXY, "/about.html"), headers={"User-Agent": "waf-trace/1"}, timeout=10)
    assert response.status_code == 200
    # proxy (server), its check and its call to http-lb (clients), the lb (server, client), the server
    trace = _jaeger_trace(waf_chain, response.headers["traceresponse"].split("-")[1], 6)
    spans = {s["spanID"]: s for s in trace["spans"]}
    tags = {sid: {t["key"]: t["value"] for t in s["tags"]} for sid, s in spans.items()}
    (root,) = [sid for sid, s in spans.items() if not s["references"]]
    port = topology.ports(WAF)["http"]
    (check,) = [sid for sid, t in tags.items() if t["upstream_cluster"].startswith(f"outbound|{port}||{WAF}.")]
    assert spans[check]["operationName"] == f"{WAF}.default.svc.cluster.local:{port}/*"
    assert spans[check]["references"][0]["spanID"] == root
    assert (tags[check]["span.kind"], tags[check]["http.status_code"], tags[check]["user_agent"]) == (
        "client", "200", "waf-trace/1")  # fmt: skip


def test_self_contained_mode_refuses_at_the_first_matching_rule(waf_chain: Config, store: redis.Redis) -> None:
    try:
        restart(waf_chain, [WAF], waf_crs_mode="self-contained")
        assert store.hget(keys.WAF_STATUS, "crs_mode") == "self-contained"
        before_events = event_ids(store)
        response = requests.get(url(waf_chain, PROXY, SQLI), timeout=10)
        assert response.status_code == 403
        (event,) = new_events(store, before_events, 1)
        assert (event["rule-id"], event["rules"], event["anomaly-score"], event["msg"]) == (
            "942100", "942100", "5", "SQL Injection Attack Detected via libinjection")  # fmt: skip
    finally:
        restart(waf_chain, [WAF])
    assert store.hget(keys.WAF_STATUS, "crs_mode") == "anomaly"


def test_without_the_waf_requests_are_refused_fail_closed_or_pass_fail_open(waf_chain: Config) -> None:
    launcher = local_stack(waf_chain)
    launcher.down([WAF])
    try:
        before = ext_authz(waf_chain)
        for _ in range(2):
            response = requests.get(url(waf_chain, PROXY, "/about.html"), timeout=10)
            assert response.status_code == 403 and "could not check" in response.text
        assert ext_authz(waf_chain) == {**before, "error": before["error"] + 2}

        restart(waf_chain, [PROXY], waf_failure_mode="open")
        for _ in range(3):
            assert requests.get(url(waf_chain, PROXY, "/about.html"), timeout=10).status_code == 200
        assert ext_authz(waf_chain) == {"ok": 0, "denied": 0, "error": 3, "failure_mode_allowed": 3}
    finally:
        restart(waf_chain, [PROXY])
        launcher.up([WAF])
    assert requests.get(url(waf_chain, PROXY, "/about.html"), timeout=10).status_code == 200


@pytest.fixture(scope="module")
def controller(waf_chain: Config) -> Iterator[Config]:
    """The controller and the validation service (JMeter), on test_validation_jmeter's ports."""
    vcfg = dataclasses.replace(waf_chain, validation_grpc=GRPC, controller_url=CONTROLLER_URL, jmeter_rmi_port=RMI_PORT)
    launcher = local_stack(vcfg)
    launcher.up(["validation", "controller"], fresh=True)
    yield vcfg
    launcher.down(["controller", "validation"])


def test_alerts_audit_log_and_status_through_the_controller_and_cloverctl(
    controller: Config, store: redis.Redis
) -> None:
    before_events = event_ids(store)
    response = requests.get(url(controller, PROXY, SQLI), headers={"User-Agent": "route-test/1"}, timeout=10)
    assert response.status_code == 403
    (event,) = new_events(store, before_events, 1)
    api = controller.controller_url
    events = requests.get(f"{api}/waf/events", params={"limit": 1}, timeout=10).json()
    assert events == {"total": len(before_events) + 1, "alerts": [event]}
    audit = requests.get(f"{api}/waf/audit", params={"limit": 1}, timeout=10).json()
    assert audit["kept_at_most"] == keys.WAF_AUDIT_LOG_LENGTH and len(audit["entries"]) == 1
    assert audit["entries"][0]["transaction"]["transaction_id"] == event["transaction-id"]
    assert audit["entries"][0]["request"]["headers"]["User-Agent"] == "route-test/1"
    status = requests.get(f"{api}/waf/status", timeout=10).json()
    assert (status["waf"]["pod"], status["waf"]["crs_mode"], status["waf"]["paranoia_level"]) == (WAF, "anomaly", "1")
    assert (status["check"]["enabled"], status["check"]["failure_mode"]) == ("1", "closed")

    shown = jmeter_cloverctl("-o", "json", "get", "waf", "--limit", "1", "--audit", "1")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["alerts"] == [event]
    text = jmeter_cloverctl("get", "waf", "--limit", "1")
    assert text.exit_code == 0, text.output
    assert f"{event['event-id']:>6} " in text.output and f"949110     5 yes     GET {event['url']}" in text.output


def test_the_original_guide_jmeter_plan_through_the_waf_has_no_errors(controller: Config, store: redis.Redis) -> None:
    before_events, before = event_ids(store), ext_authz(controller)
    created = jmeter_cloverctl("create", "testplan", "-f", str(GUIDE_YAML))
    assert (created.exit_code, created.output) == (0, "Generated test plan\n")
    started = jmeter_cloverctl("start", "testplan", "--wait", "--timeout", "240")
    assert started.exit_code == 0, started.output
    detail = jmeter_cloverctl("get", "testresult", "detail")
    samples = parse_jtl(detail.output.removeprefix("Retrieved all results\n"))
    assert len(samples) == 5 * 2 * 2
    assert {(s.label, s.response_code, s.success) for s in samples} == {("url1", "200", True), ("url2", "200", True)}
    assert ext_authz(controller) == {**before, "ok": before["ok"] + 20}
    assert event_ids(store) == before_events
