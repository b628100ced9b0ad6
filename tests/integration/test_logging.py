"""Logs, the third signal: the chain's access logs through the real shipper (an OpenTelemetry
Collector) into the real store (VictoriaLogs), joined to the traces Jaeger has.

The chain's pods rotate their logs every few kilobytes here, so every load below crosses
rotations; the exact counts show nothing was lost or doubled on the way.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from click.testing import CliRunner

from clover.config import Config
from clover.logs import JsonFormatter
from cloverctl.main import cli
from logstore.local import GROUP, SHIPPER, STORE
from logstore.query import LogFilter, LogStore
from logstore.settings import LogSettings
from sdc import grpc_client, topology
from stack.launcher import Launcher
from tests.integration.controller_parts import running
from tests.waiting import wait_until

PROXY = "proxy-access-control"
ROTATE_BYTES = "8192"
IDS = "snort-ids"
SAMPLES = Path(__file__).resolve().parents[2] / "cloverctl" / "yaml"
HOPS = 4  # proxy, load balancer, server, and the copy the proxy sends the IDS


@pytest.fixture(scope="module")
def logged(stack: Launcher, cfg: Config) -> Iterator[LogSettings]:
    """The logging group and the chain, the chain's logs rotating every ROTATE_BYTES."""
    saved = {k: os.environ.get(k) for k in ("CLOVER_ACCESS_LOG_MAX_BYTES", "CLOVER_ACCESS_LOG_KEEP")}
    os.environ.update({"CLOVER_ACCESS_LOG_MAX_BYTES": ROTATE_BYTES, "CLOVER_ACCESS_LOG_KEEP": "100000"})
    settings = LogSettings.from_env(os.environ)
    stack.down(["sdc", GROUP])
    shutil.rmtree(settings.access_log_dir, ignore_errors=True)
    stack.up([GROUP], fresh=True)
    stack.up(["sdc"], fresh=True)
    yield settings
    stack.down(["sdc", GROUP])
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def proxy_url(cfg: Config) -> str:
    return f"http://{topology.pod_ip(cfg, PROXY)}:{topology.ports(PROXY)['http']}/"


def send(cfg: Config, count: int, agent: str) -> list[tuple[str, str, str]]:
    """``count`` requests through the chain: (trace id, load balancer pod, server pod) of each."""
    sent = []
    with requests.Session() as session:
        for _ in range(count):
            answer = session.get(proxy_url(cfg), headers={"User-Agent": agent}, timeout=10)
            assert answer.status_code == 200
            lb = re.search(r"1\.1 (http-lb-v\d)", answer.headers["Via"])
            assert lb, answer.headers["Via"]
            sent.append((answer.headers["traceresponse"].split("-")[1], lb.group(1), answer.headers["X-Served-By"]))
    return sent


def stored(settings: LogSettings, agent: str, total: int) -> list[dict[str, Any]]:
    """The entries with this user-agent, once ``total`` are in the store."""
    store = LogStore(settings.store_url)
    where = LogFilter(user_agent=agent, stream=settings.stream)

    def probe() -> list[dict[str, Any]] | None:
        rows = store.search(where, limit=10_000)
        return rows if len(rows) >= total else None

    return wait_until(probe, 60, 0.25, f"{total} entries with user-agent {agent} in the store")


def drained(cfg: Config, settings: LogSettings) -> None:
    """Everything written before now is in the store: a request sent now has all its hops there."""
    agent = f"logging-test-marker/{uuid.uuid4().hex}"
    send(cfg, 1, agent)
    stored(settings, agent, HOPS)


def test_each_request_is_one_entry_per_hop_with_the_trace_id_jaeger_has(logged: LogSettings, cfg: Config) -> None:
    agent = f"logging-test/{uuid.uuid4().hex}"
    sent = send(cfg, 60, agent)
    drained(cfg, logged)
    entries = stored(logged, agent, HOPS * 60)
    assert len(entries) == HOPS * 60
    servers = Counter(server for _, _, server in sent)
    assert Counter(e["destination"] for e in entries) == {PROXY: 60, "http-lb": 60, IDS: 60, **servers}
    assert Counter(e["source"] for e in entries) == {"unknown": 60, PROXY: 120, "http-lb": 60}
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_trace.setdefault(e["traceId"], []).append(e)
        assert (e["userAgent"], e["responseCode"], e["method"], e["kind"]) == (agent, 200, "GET", "access")
    for trace_id, lb, server in sent:
        hops = by_trace[trace_id]
        assert sorted(e["pod"] for e in hops) == sorted([PROXY, lb, server, IDS])
        spans = jaeger_span_ids(cfg, trace_id)
        assert {e["spanId"] for e in hops} <= spans
    rotated = sorted(p.name for p in logged.access_log_dir.glob(f"{PROXY}.log.*"))
    assert rotated, "the proxy's log was never rotated: the load crossed no rotation"


def jaeger_span_ids(cfg: Config, trace_id: str) -> set[str]:
    def probe() -> set[str] | None:
        answer = requests.get(f"{cfg.jaeger_url}/api/traces/{trace_id}", timeout=5)
        data = answer.json().get("data") if answer.status_code == 200 else None
        return {s["spanID"] for s in data[0]["spans"]} if data else None

    return wait_until(probe, 30, 0.25, f"trace {trace_id} in Jaeger")


def kill_shipper(stack: Launcher) -> None:
    proc = stack.process(SHIPPER)
    assert proc is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


@pytest.mark.parametrize("stop", ["down", "SIGKILL"])
def test_the_shipper_stopped_and_started_during_the_load_loses_and_doubles_nothing(
    logged: LogSettings, cfg: Config, stack: Launcher, stop: str
) -> None:
    agent = f"logging-test-{stop}/{uuid.uuid4().hex}"
    total = 150
    sent: list[tuple[str, str, str]] = []
    loader = threading.Thread(target=lambda: [sent.extend(send(cfg, 1, agent)) for _ in range(total)])
    loader.start()
    wait_until(lambda: len(sent) >= 30, 60, 0.02, "30 requests sent")
    if stop == "SIGKILL":
        kill_shipper(stack)
    else:
        stack.down([SHIPPER])
    stopped_at = len(sent)
    wait_until(lambda: len(sent) >= stopped_at + 20 or not loader.is_alive(), 60, 0.02, "20 more requests sent")
    during = len(sent) - stopped_at
    stack.up([SHIPPER])
    loader.join()
    assert during >= 20, f"only {during} requests were sent while the shipper was stopped"
    assert len(sent) == total
    drained(cfg, logged)
    entries = stored(logged, agent, HOPS * total)
    assert len(entries) == HOPS * total
    assert len({(e["pod"], e["spanId"]) for e in entries}) == HOPS * total
    store = LogStore(logged.store_url)
    where = LogFilter(user_agent=agent, stream=logged.stream)
    assert sum(store.count_by("pod", where).values()) == HOPS * total


def test_malformed_lines_are_counted_and_the_lines_around_them_shipped(logged: LogSettings, cfg: Config) -> None:
    agent = f"logging-test-malformed/{uuid.uuid4().hex}"
    name = f"malformed-{uuid.uuid4().hex[:8]}.log"
    good = {"time": "2026-12-06T00:00:00.000000Z", "stream": logged.stream, "pod": "by-hand", "source": "unknown",
            "user": "unknown", "destination": "by-hand", "responseCode": 200, "responseSize": 1, "latency": 1.0,
            "method": "GET", "url": "http://by-hand/", "userAgent": agent, "traceId": "0" * 32, "spanId": "0" * 16,
            "requestId": "", "level": "info", "kind": "access"}  # fmt: skip

    def entry() -> str:
        return json.dumps({**good, "entryId": uuid.uuid4().hex})

    lines = [entry(), "not json at all", '{"half": ', entry(), "\x00\x01 binary", entry()]
    (logged.access_log_dir / name).write_text("\n".join(lines) + "\n")
    assert len(stored(logged, agent, 3)) == 3
    store = LogStore(logged.store_url)
    malformed = wait_until(lambda: store.count(f'log.file.name:="{name}" malformed:=true') == 3, 30, 0.25,
                           "three malformed lines counted")  # fmt: skip
    assert malformed
    send(cfg, 1, agent)
    assert len(stored(logged, agent, 3 + HOPS)) == 3 + HOPS


def test_clovers_own_json_log_lines_are_shipped_as_process_entries(logged: LogSettings, cfg: Config) -> None:
    part = f"logging-test-part-{uuid.uuid4().hex[:8]}"
    record = logging.LogRecord("clover.test", logging.WARNING, __file__, 1, "disk %s", ("full",), None)
    log = cfg.state_dir / part / f"{part}.log"
    log.parent.mkdir()
    try:
        log.write_text(f"=== starting {part}\n{JsonFormatter().format(record)}\nplain text\n")
        store = LogStore(logged.store_url)
        query = f'stream:="{logged.stream}" pod:="{part}"'
        wait_until(lambda: store.count(query) > 0, 30, 0.25, f"the entry of {part}")
        assert store.count(f'{query} kind:=process level:=warning logger:="clover.test" message:="disk full"') == 1
        assert store.count(query) == 1
    finally:
        shutil.rmtree(log.parent)


def test_rest_and_cloverctl_give_the_entries_of_a_trace_and_of_a_service(
    logged: LogSettings, cfg: Config, stack: Launcher
) -> None:
    agent = f"logging-test-rest/{uuid.uuid4().hex}"
    (trace_id, lb, server), *_ = send(cfg, 4, agent)
    drained(cfg, logged)
    with running(stack, ["controller"]):
        answer = requests.get(f"{cfg.controller_url}/logs", params={"trace": trace_id}, timeout=10)
        assert answer.status_code == 200
        body = answer.json()
        assert body["count"] == HOPS
        # Oldest first. The server, the lb and the proxy (all nginx) end within a millisecond, nginx's
        # resolution, and each pod takes the time it read nginx's line, so their order is not fixed;
        # the proxy's nginx mirror sends the IDS its copy beside the request: its entry may come anywhere.
        pods = [e["pod"] for e in body["entries"]]
        assert sorted(pods) == sorted([server, lb, PROXY, IDS])
        # As times, not text: the store drops a time's trailing zeros (nginx's entries have milliseconds).
        times = [datetime.fromisoformat(e["time"]) for e in body["entries"]]
        assert times == sorted(times)
        assert {e["traceId"] for e in body["entries"]} == {trace_id}

        bad = requests.get(f"{cfg.controller_url}/logs", params={"since": "ten minutes"}, timeout=10)
        assert bad.status_code == 400 and bad.json()["field"] == "since"

        result = CliRunner().invoke(cli, ["get", "logs", "--trace", trace_id, "-o", "json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["entries"] == body["entries"]

        result = CliRunner().invoke(cli, ["get", "logs", "--service", server, "--since", "1h", "--limit", "10000"])
        assert result.exit_code == 0, result.output
        assert sum(trace_id in line for line in result.output.splitlines()) == 1


def test_validate_logging_passes_and_names_a_stopped_store(logged: LogSettings, stack: Launcher) -> None:
    result = CliRunner().invoke(cli, ["validate", "logging", "-o", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["passed"] is True
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["count(destination=http-lb) = count(source=http-lb)"]["detail"] == (
        "destination=http-lb: 20, source=http-lb: 20, requests: 20"
    )
    assert {f"log of {p} read" for p in (PROXY, "http-lb-v1", "http-lb-v2")} <= set(checks)

    stack.down([STORE])
    try:
        result = CliRunner().invoke(cli, ["validate", "logging"], catch_exceptions=False)
        assert result.exit_code == 1
        assert f"Error connecting to the log store at {logged.store_url}" in result.output
        assert "logging validation has failed" in result.output
    finally:
        stack.up([STORE])


def test_an_ids_alert_is_an_entry_of_the_request_that_raised_it(logged: LogSettings, cfg: Config) -> None:
    rule = yaml.safe_load((SAMPLES / "idsrule_scan.yaml").read_text())
    assert grpc_client.add_rule(cfg, rule) == "Added to local rules"
    grpc_client.stop_snort(cfg)
    grpc_client.start_snort(cfg)
    try:
        answer = requests.get(proxy_url(cfg), headers={"User-Agent": "asafaweb.com"}, timeout=10)
        assert answer.status_code == 200
        trace_id = answer.headers["traceresponse"].split("-")[1]
        store = LogStore(logged.store_url)

        def alerts() -> list[dict[str, Any]]:
            return [e for e in store.search(LogFilter(trace=trace_id, stream=logged.stream)) if e["kind"] == "alert"]

        found = wait_until(lambda: [a for a in alerts() if a["sid"] == 10000003], 60, 0.25, "the scan alert's entry")
        assert len(found) == 1
        (scan,) = found
        assert (scan["pod"], scan["msg"], scan["level"]) == (IDS, "MALWARE-CNC User-Agent ASafaWeb Scan", "warning")
        assert all(a["traceId"] == trace_id for a in alerts())
    finally:
        grpc_client.delete_rules(cfg, ["10000003"])
        grpc_client.stop_snort(cfg)
        grpc_client.start_snort(cfg)
