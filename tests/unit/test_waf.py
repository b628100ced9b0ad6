"""The WAF's pieces without services: its settings, ModSecurity's JSON audit entries as alerts,
the audit log reader, the check's body split and metric names, and its cluster manifests."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from clover import keys
from clover.config import Config, ConfigError
from cloverctl.system import System, load_manifests
from cloverctl.waf import status_lines
from dashboard.callbacks.waf import WAF_ALERT_HEADER, alert_rows, status_line
from sdc import topology
from sdc.names import HostPort
from sdc.waf.audit import AuditEntryError, event_fields, parse_entry, parse_message
from sdc.waf.check import ext_authz_metric, split_head, waf_address
from sdc.waf.service import AuditLogReader, proxy_addresses
from sdc.waf.settings import waf_env
from stack.images.catalogue import images


def test_waf_settings_default_to_off_closed_anomaly_level_1() -> None:
    cfg = Config.from_env({})
    assert (cfg.waf_check, cfg.waf_failure_mode, cfg.waf_body_limit, cfg.waf_crs_mode, cfg.waf_paranoia_level) == (
        False, "closed", 65536, "anomaly", 1)  # fmt: skip
    on = Config.from_env({"CLOVER_WAF": "on", "CLOVER_WAF_FAILURE_MODE": "open", "CLOVER_WAF_BODY_LIMIT": "1024",
                          "CLOVER_WAF_CRS_MODE": "self-contained", "CLOVER_WAF_PARANOIA_LEVEL": "3"})  # fmt: skip
    assert (on.waf_check, on.waf_failure_mode, on.waf_body_limit, on.waf_crs_mode, on.waf_paranoia_level) == (
        True, "open", 1024, "self-contained", 3)  # fmt: skip
    assert waf_env(on) == {"CLOVER_WAF": "on", "CLOVER_WAF_FAILURE_MODE": "open", "CLOVER_WAF_BODY_LIMIT": "1024",
                           "CLOVER_WAF_CRS_MODE": "self-contained", "CLOVER_WAF_PARANOIA_LEVEL": "3",
                           "CLOVER_WAF_ADDRESS": ""}  # fmt: skip
    assert Config.from_env(waf_env(on)) == on


@pytest.mark.parametrize(("name", "value", "message"), [
    ("CLOVER_WAF", "yes", "CLOVER_WAF='yes' must be one of on, off"),
    ("CLOVER_WAF_FAILURE_MODE", "half", "CLOVER_WAF_FAILURE_MODE='half' must be one of closed, open"),
    ("CLOVER_WAF_CRS_MODE", "strict", "CLOVER_WAF_CRS_MODE='strict' must be one of anomaly, self-contained"),
    ("CLOVER_WAF_PARANOIA_LEVEL", "5", "CLOVER_WAF_PARANOIA_LEVEL=5 must be 1, 2, 3 or 4"),
    ("CLOVER_WAF_PARANOIA_LEVEL", "0", "CLOVER_WAF_PARANOIA_LEVEL='0' must be positive"),
    ("CLOVER_WAF_BODY_LIMIT", "lots", "CLOVER_WAF_BODY_LIMIT='lots' is not a whole number"),
    ("CLOVER_WAF_ADDRESS", "modsecurity-crs", "CLOVER_WAF_ADDRESS='modsecurity-crs' must look like host:port"),
])  # fmt: skip
def test_a_bad_waf_setting_is_refused_by_name(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Config.from_env({name: value})
    assert str(refused.value) == message


def message(kind: str, rule_id: str, msg: str, severity: str = "CRITICAL") -> str:
    """A message as ModSecurity 2.9 writes it into audit_data.messages."""
    head = "Access denied with code 403 (phase 2). Operator GE matched 5 at TX:anomaly_score." if kind == "deny" else (
        "Warning. detected SQLi using libinjection.")  # fmt: skip
    return (f'{head} [file "/usr/share/modsecurity-crs/rules/X.conf"] [line "66"] [id "{rule_id}"] [msg "{msg}"] '
            f'[data "Matched Data: s&sos found within ARGS:id: 1\' OR \'1\'=\'1"] [severity "{severity}"] '
            f'[ver "OWASP_CRS/3.3.4"] [tag "attack-sqli"]')  # fmt: skip


def entry(messages: list[str], headers: dict[str, str], intercepted: bool = True) -> dict[str, Any]:
    return {
        "transaction": {"time": "05/Dec/2026:12:05:21.697773 +0000", "transaction_id": "axP-AbcvyvCRtF4ZAoCd8AAAAEQ",
                        "remote_address": "10.177.0.203", "remote_port": 38434, "local_address": "10.177.0.40",
                        "local_port": 80},
        "request": {"request_line": "GET /?id=1%27%20OR%20%271%27%3D%271 HTTP/1.1",
                    "headers": {"Host": "10.177.0.10:9180", "User-Agent": "curl/7.88.1", **headers}},
        "response": {"protocol": "HTTP/1.1", "status": 403 if intercepted else 200},
        "audit_data": {"messages": messages, "error_messages": ["the same, as Apache logged them"],
                       "action": {"intercepted": True, "phase": 2} if intercepted else {}},
    }  # fmt: skip


def test_an_anomaly_mode_entry_names_949110_its_rules_score_client_url_and_trace() -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    line = json.dumps(entry([
        message("warn", "942100", "SQL Injection Attack Detected via libinjection"),
        message("deny", "949110", "Inbound Anomaly Score Exceeded (Total Score: 5)"),
        message("warn", "980130", "Inbound Anomaly Score Exceeded (Total Inbound Score: 5 - SQLI=5,XSS=0)", ""),
        message("warn", "10101", "Clover: anomaly score 5", ""),
    ], {"traceparent": f"00-{trace_id}-b7ad6b7169203331-01", "X-Request-Id": "r-1"}))  # fmt: skip
    alert, kept = parse_entry(line)
    assert (alert.rule_id, alert.msg, alert.anomaly_score, alert.rules, alert.blocked, alert.status) == (
        "949110",
        "Inbound Anomaly Score Exceeded (Total Score: 5)",
        5,
        ("942100", "949110", "980130"),
        True,
        403,
    )
    assert (alert.client_ip, alert.method, alert.url, alert.user_agent, alert.trace_id, alert.request_id) == (
        "10.177.0.203", "GET", "/?id=1%27%20OR%20%271%27%3D%271", "curl/7.88.1", trace_id, "r-1")  # fmt: skip
    assert alert.time == datetime(2026, 12, 5, 12, 5, 21, 697773, UTC).timestamp()
    assert "error_messages" not in kept["audit_data"] and kept["audit_data"]["action"] == {"intercepted": True,
                                                                                         "phase": 2}  # fmt: skip
    fields = event_fields(alert, 7)
    assert tuple(fields) == keys.WAF_EVENT_FIELDS
    assert (fields["event-id"], fields["rules"], fields["blocked"], fields["trace-id"]) == (
        "7", "942100,949110,980130", "1", trace_id)  # fmt: skip


def test_an_entry_let_through_names_its_most_severe_rule_and_a_b3_trace() -> None:
    alert, _ = parse_entry(json.dumps(entry([
        message("warn", "920320", "Missing User Agent Header", "NOTICE"),
        message("warn", "941100", "XSS Attack Detected via libinjection", "CRITICAL"),
    ], {"X-B3-TraceId": "463ac35c9f6413ad"}, intercepted=False)))  # fmt: skip
    assert (alert.rule_id, alert.blocked, alert.status, alert.anomaly_score, alert.trace_id) == (
        "941100", False, 200, 0, "463ac35c9f6413ad")  # fmt: skip
    assert event_fields(alert, 1)["trace-id"] == "463ac35c9f6413ad"


def test_a_message_without_a_rule_is_no_match_and_quotes_are_unescaped() -> None:
    assert parse_message("Warning. Request body no files data length is larger than the configured limit.") is None
    match = parse_message('Warning. x [id "941100"] [msg "say \\"hi\\""] [severity "CRITICAL"]')
    assert match is not None and (match.rule_id, match.msg, match.denied) == ("941100", 'say "hi"', False)


@pytest.mark.parametrize(("line", "why"), [
    ("not json", "not JSON"),
    ("[1]", "not a JSON object"),
    ('{"request": {}}', "no transaction, request or audit_data object"),
    ('{"transaction": {"time": "yesterday"}, "request": {}}', "transaction.time 'yesterday' is not ModSecurity's time"),
])  # fmt: skip
def test_a_line_that_is_not_an_audit_entry_is_refused_saying_why(line: str, why: str) -> None:
    with pytest.raises(AuditEntryError) as refused:
        parse_entry(line)
    assert str(refused.value).startswith(why)


def test_the_reader_returns_complete_new_lines_and_follows_a_truncated_log(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b'{"before": 1}\n')
    reader = AuditLogReader(log)
    assert reader.lines() == []
    with open(log, "ab") as f:
        f.write(b'{"a": 1}\n{"b":')
    assert reader.lines() == [b'{"a": 1}']
    with open(log, "ab") as f:
        f.write(b" 2}\n\n")
    assert reader.lines() == [b'{"b": 2}']
    log.write_bytes(b'{"c": 3}\n')  # rotated: shorter than what was read
    assert reader.lines() == [b'{"c": 3}']
    assert AuditLogReader(tmp_path / "missing.log").lines() == []


def test_split_head_reads_the_first_bytes_and_streams_the_whole_body() -> None:
    async def body() -> AsyncIterator[bytes]:
        for chunk in (b"abc", b"defg", b"hij"):
            yield chunk

    async def split(limit: int) -> tuple[bytes, bytes]:
        head, whole = await split_head(body(), limit)
        return head, b"".join([chunk async for chunk in whole])

    assert asyncio.run(split(5)) == (b"abcde", b"abcdefghij")
    assert asyncio.run(split(100)) == (b"abcdefghij", b"abcdefghij")


def test_the_proxy_checks_with_the_chains_waf_pod_unless_an_address_is_given() -> None:
    cfg = Config.from_env({})
    assert waf_address(cfg) == HostPort("modsecurity-crs", 80 if os.geteuid() == 0 else 8080)
    in_cluster = Config.from_env({"CLOVER_WAF_ADDRESS": "modsecurity-crs.clover-gateway:80"})
    assert waf_address(in_cluster) == HostPort("modsecurity-crs.clover-gateway", 80)


def test_apache_believes_the_client_address_the_proxy_names() -> None:
    netns = dataclasses.replace(Config.from_env({}), sdc_mode="netns")
    assert proxy_addresses(netns) == "10.177.0.10"
    assert proxy_addresses(dataclasses.replace(netns, sdc_mode="loopback")) == "127.177.0.10"
    assert proxy_addresses(dataclasses.replace(netns, sdc_mode="cluster")) == "10.244.0.0/24"


def test_check_counters_are_named_as_envoys_ext_authz_stats() -> None:
    assert ext_authz_metric("proxy-access-control", "failure_mode_allowed") == (
        "envoy_http_proxy_access_control_ext_authz_failure_mode_allowed")  # fmt: skip


def test_the_status_says_what_reported_and_what_did_not() -> None:
    status = {"waf": {"pod": "modsecurity-crs", "address": "10.177.0.40:80", "crs_mode": "anomaly",
                      "paranoia_level": "1", "audit_entries": "4", "alerts": "4", "blocked": "3"},
              "check": {"pod": "proxy-access-control", "enabled": "1", "failure_mode": "closed", "body_limit": "65536",
                        "ok": "10", "denied": "3", "error": "2", "failure_mode_allowed": "0"}}  # fmt: skip
    assert status_lines(status) == [
        "WAF modsecurity-crs at 10.177.0.40:80: CRS anomaly mode, paranoia level 1; 4 audit entries, 4 alerts, "
        "3 blocked",
        "check at proxy-access-control: on, fail-closed, body limit 65536 bytes; ok 10, denied 3, error 2, "
        "failure-mode allowed 0",
    ]
    assert status_line(status) == ("CRS anomaly mode, paranoia level 1; checks at the proxy (fail-closed): ok 10, "
                                   "denied 3, error 2, let through on error 0")  # fmt: skip
    assert status_lines({"waf": {}, "check": {}}) == [
        "WAF: no modsecurity-crs pod has reported (cloverctl local up sdc)",
        "check: the proxy has not reported",
    ]
    assert status_line({"waf": {}, "check": {"enabled": "0"}}) == (
        "no modsecurity-crs pod has reported; the proxy's check is off (CLOVER_WAF=on)")  # fmt: skip


def test_the_gateway_manifests_run_the_waf_image_least_privileged_in_clover_gateway() -> None:
    gateway = System("gateway", ("namespace.yaml", "modsecurity-crs.yaml"))
    assert yaml.safe_load((gateway.directory / "kustomization.yaml").read_text())["resources"] == list(gateway.files)
    docs = {doc["kind"]: doc for doc in load_manifests(gateway)}
    assert docs["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    deployment, service = docs["Deployment"], docs["Service"]
    assert deployment["metadata"]["namespace"] == service["metadata"]["namespace"] == "clover-gateway"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "opnfv/clover-modsecurity-crs:latest"
    assert "clover-modsecurity-crs" in {image.name for image in images()}
    assert container["args"] == ["modsecurity-crs"]
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}  # fmt: skip
    assert {bound: set(container["resources"][bound]) for bound in ("requests", "limits")} == {
        bound: {"cpu", "memory", "ephemeral-storage"} for bound in ("requests", "limits")}  # fmt: skip
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "stats"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": topology.WAF_HTTP_PORT_UNPRIVILEGED, "stats": Config().sdc_stats_port}
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]


def test_the_dashboard_rows_read_the_alert_hash_fields() -> None:
    alert = {"event-id": "3", "event-second": "1796472321.697773", "client-ip": "10.177.0.203", "method": "GET",
             "url": "/?id=1", "rule-id": "949110", "msg": "Inbound Anomaly Score Exceeded (Total Score: 5)",
             "anomaly-score": "5", "blocked": "1", "rules": "942100,949110,980130"}  # fmt: skip
    assert alert_rows([alert, {"event-id": "4"}]) == [
        ["3", "2026-12-05 12:05:21", "10.177.0.203", "GET /?id=1", "949110",
         "Inbound Anomaly Score Exceeded (Total Score: 5)", "5", "yes", "942100,949110,980130"],
        ["4", "—", "—", " ", "—", "—", "—", "no", ""],
    ]  # fmt: skip
    assert len(WAF_ALERT_HEADER) == len(alert_rows([alert])[0])
