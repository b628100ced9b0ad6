"""The Sample chain tab's WAF panel: the CRS mode, the proxy's check counts and the newest alerts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import redis
from dash import Dash, Input, Output, no_update

from controller.errors import ApiError
from controller.services.waf import WafService
from dashboard import views
from dashboard.callbacks.replies import failure

WAF_ALERT_HEADER = ("Event", "Time (UTC)", "Client", "Request", "Rule", "Message", "Score", "Blocked", "Rules")


def status_line(status: Mapping[str, Mapping[str, str]]) -> str:
    waf, check = status.get("waf") or {}, status.get("check") or {}
    mode = (f"CRS {waf.get('crs_mode', '?')} mode, paranoia level {waf.get('paranoia_level', '?')}"
            if waf else "no modsecurity-crs pod has reported")  # fmt: skip
    if not check:
        return f"{mode}; the proxy has not reported"
    if check.get("enabled") != "1":
        return f"{mode}; the proxy's check is off (CLOVER_WAF=on)"
    return (f"{mode}; checks at the proxy (fail-{check.get('failure_mode', '?')}): ok {check.get('ok', '0')}, "
            f"denied {check.get('denied', '0')}, error {check.get('error', '0')}, let through on error "
            f"{check.get('failure_mode_allowed', '0')}")  # fmt: skip


def alert_rows(alerts: Sequence[Mapping[str, str]]) -> list[list[str]]:
    rows = []
    for a in alerts:
        try:
            when = datetime.fromtimestamp(float(a.get("event-second", "")), UTC).strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            when = views.NA
        rows.append([a.get("event-id", views.NA), when, a.get("client-ip", views.NA),
                     f"{a.get('method', '')} {a.get('url', '')}", a.get("rule-id", views.NA), a.get("msg", views.NA),
                     a.get("anomaly-score", views.NA), "yes" if a.get("blocked") == "1" else "no",
                     a.get("rules", "")])  # fmt: skip
    return rows


def register(app: Dash, waf: WafService) -> None:
    @app.callback(
        Output("waf-status", "children"),
        Output("waf-alerts", "children"),
        Input("tabs", "value"),
        Input("tick", "n_intervals"),
        Input("chain-refresh", "n_clicks"),
    )
    def waf_state(tab: str, *_: Any) -> tuple[Any, Any]:
        if tab != "chain":
            return no_update, no_update
        try:
            status, found = waf.status(), waf.alerts(20)
        except redis.RedisError as exc:
            return failure(ApiError(503, f"Redis unavailable: {exc}")), no_update
        line = f"{status_line(status)}. {found['total']} alert(s); the newest {len(found['alerts'])}:"
        return line, views.table(WAF_ALERT_HEADER, alert_rows(found["alerts"]), "waf-grid", "no WAF alerts")
