"""What each part of the dashboard shows, computed from the controller's data: plain functions
the callbacks call (and the benchmark times), returning Dash components and figure dicts."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from dash import dcc, html

from clover.figures import TABLE_FIGURES
from dashboard import figures

NA = "—"
RT_HEADER = ("Service", *(f.header for f in TABLE_FIGURES), "Logs")
DETAIL_LIMIT = 500  # lines shown in a details tab; the rest are counted


def cell(value: Any) -> str:
    return NA if value in (None, "", "NA") else str(value)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~-])")


def _md(value: Any) -> str:
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(value)).replace("\n", " ")


@dataclass(frozen=True)
class Link:
    """A table cell that links somewhere (its text escaped, its address URL-encoded)."""

    text: str
    href: str

    def markdown(self) -> str:
        return f"[{_md(self.text)}]({self.href})"


def logs_link(service: Any) -> Link | str:
    """'logs': the access-log entries of ``service`` in the last hour (GET /logs as a page)."""
    if service in (None, "", "NA"):
        return NA
    return Link("logs", "/logs?" + urlencode({"service": str(service), "since": "1h", "format": "html"}))


SLOWEST_HEADER = ("Time", "Service", "Latency (ms)", "Status", "Method", "Request's logs", "Service's logs")


def slowest_rows(entries: Sequence[Mapping[str, Any]]) -> list[list[str | Link]]:
    """The slowest requests (logstore's ``slowest``), each with links to its logs and its service's."""
    rows: list[list[str | Link]] = []
    for e in entries:
        trace = e.get("traceId")
        request = (
            Link("logs of this request", "/logs?" + urlencode({"trace": trace, "format": "html"})) if trace else NA
        )
        service = logs_link(e.get("destination"))
        shown = [cell(e.get(k)) for k in ("time", "destination", "latency", "responseCode", "method")]
        rows.append([*shown, request, Link("logs of this service", service.href) if isinstance(service, Link) else NA])
    return rows


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str, empty: str = "nothing yet") -> Any:
    """A table as one Markdown component (a refresh builds hundreds of rows: one component is far
    cheaper to make, send and render than a component per cell)."""
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.markdown() if isinstance(c, Link) else _md(c) for c in row) + " |" for row in rows]
    if not rows:
        lines.append("| " + _md(empty) + " |" + " |" * (len(header) - 1))
    return dcc.Markdown("\n".join(lines), id=table_id, className="grid")


def response_time_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[str | Link]]:
    return [
        [cell(r.get("name")), *(cell(f.unit.show(r.get(f.json))) for f in TABLE_FIGURES), logs_link(r.get("name"))]
        for r in rows
    ]


def text_list(values: Sequence[str], what: str) -> html.Pre:
    shown = list(values[:DETAIL_LIMIT])
    more = len(values) - len(shown)
    text = "\n".join(shown) if shown else f"no {what} yet"
    if more > 0:
        text += f"\n… and {more} more (GET /visibility/get/stats/tracing for all)"
    return html.Pre(text, className="details")


def counts(stats: Mapping[str, Any]) -> list[Any]:
    return [
        html.Div([html.Span(cell(stats.get(key)), className="count-value", id=f"count-{label.lower()}"),
                  html.Span(label, className="count-label")], className="count")
        for label, key in (("Traces", "trace_count"), ("Spans", "span_count"), ("Metrics", "metric_count"))
    ]  # fmt: skip


def refresh(stats: Mapping[str, Any], metric_values: Sequence[tuple[str, str | None]], top: int) -> dict[str, Any]:
    """Every output of the visibility refresh, from ``/visibility/get/stats/all`` (whole lists)
    and the latest metric values."""
    rows = stats.get("response_times", [])
    metrics = stats.get("metrics_time", [])
    return {
        "counts": counts(stats),
        "rt_table": table(RT_HEADER, response_time_rows(rows), "rt-table-grid", "no tracked service has results yet"),
        "latency": figures.latency_bars(rows, top),
        "errors": figures.error_bars(rows, top),
        "per_service": figures.count_bars(stats.get("node_id_count", []), "Spans per node", "Nodes", top),
        "per_url": figures.count_bars(stats.get("request_url_count", []), "Spans per URL", "URLs", top),
        "per_status": figures.count_bars(
            stats.get("status_code_count", []), "Spans per status code and URL", "Status Codes, URLs", top
        ),
        "user_agents": figures.share_pie(stats.get("user_agent_count", []), "Share of spans per user-agent", top),
        "per_service_url": figures.count_bars(
            stats.get("node_url_count", []), "Spans per node and URL", "Nodes, URLs", top
        ),
        "ua_list": text_list(stats.get("user_agents", []), "user agents"),
        "url_list": text_list(stats.get("request_urls", []), "request URLs"),
        "status_list": text_list(stats.get("status_codes", []), "status codes"),
        "op_list": text_list(stats.get("op_names", []), "operation names"),
        "node_list": text_list(stats.get("node_ids", []), "node ids"),
        "cluster_list": text_list(stats.get("upstream_clusters", []), "upstream clusters"),
        "metrics_table": table(
            ["Metric", "Latest value"],
            [[n, cell(v)] for n, v in metric_values],
            "metrics-table-grid",
            "no tracked metric has a value yet",
        ),
        "metric_plots": figures.metric_plots(metrics, top),
        "updated": "Updated " + time.strftime("%H:%M:%S"),
    }


def ids_status_line(status: Mapping[str, Any]) -> str:
    running = status.get("running")
    return (
        f"{'running' if running else 'stopped'}"
        + (f" (pid {status.get('pid')})" if running else "")
        + f", {status.get('rules_loaded', 0)} rules loaded, {status.get('requests_inspected', 0)} requests"
        f" inspected, {status.get('alerts', 0)} alerts"
    )


def alert_rows(alerts: Sequence[Mapping[str, str]]) -> list[list[str]]:
    rows = []
    for a in alerts:
        when = NA
        if a.get("event-second", "").isdigit():
            when = datetime.fromtimestamp(int(a["event-second"]), UTC).strftime("%Y-%m-%d %H:%M:%S")
        signature = ":".join(a.get(k, "?") for k in ("generator-id", "signature-id", "signature-revision"))
        rows.append([
            a.get("event-id", NA), when, a.get("msg", NA), signature, a.get("priority", NA),
            f"{a.get('source-ip', '?')}:{a.get('sport-itype', '?')} → {a.get('destination-ip', '?')}:"
            f"{a.get('dport-icode', '?')}",
            a.get("blocked", NA),
        ])  # fmt: skip
    return rows


ALERT_HEADER = ("Event", "Time (UTC)", "Message", "Signature (gid:sid:rev)", "Priority", "Source → destination",
                "Blocked")  # fmt: skip


def summary_rows(summary: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [
        [str(r["label"]), str(r["samples"]), str(r["errors"]), f"{float(r['error_percent']):.2f}%",
         f"{float(r['throughput']):.2f}", f"{float(r['mean_ms']):.1f}", str(r["min_ms"]), str(r["p50_ms"]),
         str(r["p90_ms"]), str(r["p99_ms"]), str(r["max_ms"])]
        for r in summary
    ]  # fmt: skip


SUMMARY_HEADER = ("Label", "Samples", "Errors", "Error %", "Req/s", "Mean (ms)", "Min", "p50", "p90", "p99", "Max")
