"""ModSecurity's JSON audit log entries (``SecAuditLogFormat JSON``, parts A, B, F, H) as alerts.

An entry is one request some rule matched. Its ``audit_data.messages`` hold one text per match,
``Warning. <what> [file ...] [id "942100"] [msg "..."] [severity "CRITICAL"] ...``, or
``Access denied with code 403 (phase 2). ...`` for the rule that decided. The alert names that
rule (anomaly mode: 949110, the score threshold; self-contained mode: the attack rule itself),
or, for a request let through, the most severe rule that matched.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sdc.accesslog import WafAlertEntry, timestamp

# Clover's own rules in crs-setup.conf (ModSecurity's local-use id range): they report the
# anomaly score and are not CRS matches.
SCORE_RULE_ID = "10100"
SCORE_LOG_RULE_ID = "10101"
CLOVER_RULE_IDS = frozenset({SCORE_RULE_ID, SCORE_LOG_RULE_ID})

SEVERITIES = ("EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG")
_TAG = re.compile(r'\[(\w+) "((?:[^"\\]|\\.)*)"\]')
_SCORE = re.compile(r"Clover: anomaly score (\d+)")
_TIME_FORMAT = "%d/%b/%Y:%H:%M:%S.%f %z"


class AuditEntryError(ValueError):
    """A line of the audit log that is not a ModSecurity JSON entry; the message says what is missing."""


@dataclass(frozen=True)
class RuleMatch:
    """One message of an entry: the rule that matched and whether it denied the request."""

    rule_id: str
    msg: str
    severity: str
    denied: bool

    @property
    def rank(self) -> int:
        return SEVERITIES.index(self.severity) if self.severity in SEVERITIES else len(SEVERITIES)


@dataclass(frozen=True)
class WafAlert:
    transaction_id: str
    time: float
    rule_id: str
    msg: str
    anomaly_score: int
    rules: tuple[str, ...]
    blocked: bool
    status: int
    client_ip: str
    method: str
    url: str
    user_agent: str = ""
    trace_id: str = ""
    request_id: str = ""
    matches: tuple[RuleMatch, ...] = field(default=(), repr=False)


def parse_message(text: str) -> RuleMatch | None:
    """The rule a message names (None for a message without a rule id)."""
    tags: dict[str, str] = {}
    for name, value in _TAG.findall(text):
        tags.setdefault(name, value.replace('\\"', '"'))
    if "id" not in tags:
        return None
    return RuleMatch(tags["id"], tags.get("msg", ""), tags.get("severity", ""), text.startswith("Access denied"))


def _header(headers: dict[str, Any], name: str) -> str:
    lname = name.lower()
    return next((str(v) for k, v in headers.items() if k.lower() == lname), "")


def trace_id_of(headers: dict[str, Any]) -> str:
    """The trace the request belongs to: W3C ``traceparent``, else B3's ``X-B3-TraceId``."""
    parts = _header(headers, "traceparent").split("-")
    if len(parts) >= 4 and len(parts[1]) == 32:
        return parts[1]
    return _header(headers, "x-b3-traceid")


def parse_entry(line: str | bytes) -> tuple[WafAlert, dict[str, Any]]:
    """(the alert, the entry as kept in ``waf_audit_log``) from one line of the audit log."""
    try:
        entry = json.loads(line)
    except ValueError as exc:
        raise AuditEntryError(f"not JSON: {exc}") from None
    if not isinstance(entry, dict):
        raise AuditEntryError("not a JSON object")
    transaction, request = entry.get("transaction"), entry.get("request")
    audit = entry.get("audit_data") or {}
    if not isinstance(transaction, dict) or not isinstance(request, dict) or not isinstance(audit, dict):
        raise AuditEntryError("no transaction, request or audit_data object")
    try:
        when = datetime.strptime(str(transaction["time"]), _TIME_FORMAT).timestamp()
    except (KeyError, ValueError):
        raise AuditEntryError(f"transaction.time {transaction.get('time')!r} is not ModSecurity's time") from None
    method, _, rest = str(request.get("request_line", "")).partition(" ")
    url = rest.rsplit(" ", 1)[0] if " HTTP/" in rest else rest
    headers = request.get("headers") or {}
    messages = [str(m) for m in audit.get("messages") or []]
    matches = tuple(m for m in map(parse_message, messages) if m is not None)
    crs = [m for m in matches if m.rule_id not in CLOVER_RULE_IDS]
    decided = next((m for m in crs if m.denied), None) or min(crs, key=lambda m: m.rank, default=None)
    score = next((int(s.group(1)) for s in map(_SCORE.search, messages) if s), 0)
    response = entry.get("response") or {}
    action = audit.get("action") or {}
    alert = WafAlert(
        transaction_id=str(transaction.get("transaction_id", "")),
        time=when,
        rule_id=decided.rule_id if decided else "",
        msg=decided.msg if decided else "",
        anomaly_score=score,
        rules=tuple(dict.fromkeys(m.rule_id for m in crs)),
        blocked=bool(action.get("intercepted")),
        status=int(response.get("status") or 0),
        client_ip=str(transaction.get("remote_address", "")),
        method=method,
        url=url,
        user_agent=_header(headers, "user-agent"),
        trace_id=trace_id_of(headers),
        request_id=_header(headers, "x-request-id"),
        matches=matches,
    )
    kept = {**entry, "audit_data": {k: v for k, v in audit.items() if k != "error_messages"}}
    return alert, kept


def alert_entry(alert: WafAlert, event_id: int, pod: str, stream: str) -> WafAlertEntry:
    """The alert as the structured entry the log shipper reads (in the WAF pod's own log)."""
    return WafAlertEntry(time=timestamp(alert.time), stream=stream, pod=pod, ruleId=alert.rule_id, msg=alert.msg,
                         anomalyScore=alert.anomaly_score, rules=",".join(alert.rules), blocked=alert.blocked,
                         responseCode=alert.status, clientIp=alert.client_ip, method=alert.method, url=alert.url,
                         userAgent=alert.user_agent, traceId=alert.trace_id, requestId=alert.request_id,
                         eventId=event_id)  # fmt: skip


def event_fields(alert: WafAlert, event_id: int) -> dict[str, str]:
    """The ``waf_event:<id>`` hash of one alert (the fields of ``keys.WAF_EVENT_FIELDS``)."""
    return {
        "event-id": str(event_id),
        "event-second": f"{alert.time:.6f}",
        "transaction-id": alert.transaction_id,
        "rule-id": alert.rule_id,
        "msg": alert.msg,
        "anomaly-score": str(alert.anomaly_score),
        "rules": ",".join(alert.rules),
        "blocked": str(int(alert.blocked)),
        "status": str(alert.status),
        "client-ip": alert.client_ip,
        "method": alert.method,
        "url": alert.url,
        "user-agent": alert.user_agent,
        "trace-id": alert.trace_id or "None",
        "request-id": alert.request_id,
    }
