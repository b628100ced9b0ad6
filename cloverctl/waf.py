"""``cloverctl get waf``: the WAF in front of the sample chain (modsecurity-crs), through the
controller: its CRS mode, the proxy's check settings and counts, the newest alerts, and with
``--audit`` the newest audit log entries."""

from __future__ import annotations

import time
from typing import Any

import click

from cloverctl import rest
from cloverctl.rest import output_option


def _when(seconds: str) -> str:
    try:
        return time.strftime("%H:%M:%S", time.localtime(float(seconds)))
    except ValueError:
        return "-"


def status_lines(status: dict[str, Any]) -> list[str]:
    waf, check = status.get("waf") or {}, status.get("check") or {}
    lines = []
    if waf:
        lines.append(f"WAF {waf.get('pod', '?')} at {waf.get('address', '?')}: CRS {waf.get('crs_mode', '?')} mode, "
                     f"paranoia level {waf.get('paranoia_level', '?')}; {waf.get('audit_entries', '0')} audit entries, "
                     f"{waf.get('alerts', '0')} alerts, {waf.get('blocked', '0')} blocked")  # fmt: skip
    else:
        lines.append("WAF: no modsecurity-crs pod has reported (cloverctl local up sdc)")
    if check:
        state = "on" if check.get("enabled") == "1" else "off (CLOVER_WAF=on turns it on)"
        lines.append(f"check at {check.get('pod', '?')}: {state}, fail-{check.get('failure_mode', '?')}, body limit "
                     f"{check.get('body_limit', '?')} bytes; ok {check.get('ok', '0')}, denied "
                     f"{check.get('denied', '0')}, error {check.get('error', '0')}, failure-mode allowed "
                     f"{check.get('failure_mode_allowed', '0')}")  # fmt: skip
    else:
        lines.append("check: the proxy has not reported")
    return lines


def alert_lines(alerts: list[dict[str, str]]) -> list[str]:
    lines = [f"{'id':>6} {'time':<8} {'client':<15} {'rule':>6} {'score':>5} {'blocked':<7} request / message"]
    indent = " " * 53
    for a in alerts:
        blocked = "yes" if a.get("blocked") == "1" else "no"
        lines.append(f"{a.get('event-id', ''):>6} {_when(a.get('event-second', '')):<8} {a.get('client-ip', ''):<15} "
                     f"{a.get('rule-id', ''):>6} {a.get('anomaly-score', ''):>5} {blocked:<7} "
                     f"{a.get('method', '')} {a.get('url', '')}")  # fmt: skip
        lines.append(f"{indent}{a.get('msg', '')} (rules {a.get('rules', '')})")
    return lines


@click.command("waf", epilog=rest.EXIT_CODES_HELP)
@click.option("--limit", default=10, show_default=True, type=click.IntRange(min=0), help="How many alerts.")
@click.option("--audit", "audit", default=0, type=click.IntRange(min=0), metavar="N",
              help="Also show the N newest audit log entries (ModSecurity's JSON).")  # fmt: skip
@output_option
def get_waf(limit: int, audit: int) -> None:
    """Show the WAF's mode and counts and its newest alerts (GET /waf/status, /waf/events, /waf/audit)."""
    status = rest.data("GET", "/waf/status")
    events = rest.data("GET", "/waf/events", params={"limit": limit})
    log = rest.data("GET", "/waf/audit", params={"limit": audit}) if audit else None
    if rest.json_output():
        rest.echo_json({"status": status, **events, **({"audit": log["entries"]} if log else {})})
        return
    for line in status_lines(status):
        click.echo(line)
    click.echo(f"\n{events['total']} alerts, newest {len(events['alerts'])}:")
    if events["alerts"]:
        for line in alert_lines(events["alerts"]):
            click.echo(line)
    if log:
        click.echo(f"\naudit log, newest {len(log['entries'])} of {log['kept']} kept:")
        for entry in log["entries"]:
            click.echo(rest.json_dumps(entry))


def register(verbs: dict[str, click.Group]) -> None:
    verbs["get"].add_command(get_waf)
