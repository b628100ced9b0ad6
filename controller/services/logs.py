"""The chain's access logs, read from the log store (logstore/): by trace, by service, since a time."""

from __future__ import annotations

import html
import os
from typing import Any
from urllib.parse import urlencode

from controller.errors import ApiError, bad_request
from logstore.query import LogFilter, LogQueryError, LogStore, LogStoreError
from logstore.settings import LogSettings


def search_logs(trace: str | None, service: str | None, since: str | None, limit: int) -> dict[str, Any]:
    """``{"entries": [...], "count": N, "store": URL}``: oldest first, at most ``limit`` (the newest)."""
    settings = LogSettings.from_env(os.environ)
    where = LogFilter(trace=trace or None, service=service or None, since=since or None, stream=settings.stream)
    try:
        entries = LogStore(settings.store_url).search(where, limit)
    except LogQueryError as exc:
        raise bad_request(str(exc), exc.field) from None
    except LogStoreError as exc:
        raise ApiError(503, str(exc)) from None
    return {"entries": entries, "count": len(entries), "store": settings.store_url}


PAGE_COLUMNS = ("time", "pod", "source", "destination", "responseCode", "responseSize", "latency", "method", "url",
                "userAgent", "traceId", "spanId")  # fmt: skip


def logs_page(found: dict[str, Any], title: str) -> str:
    """The entries as an HTML page (what the dashboard's links open); each trace id links to the
    entries of that request."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in PAGE_COLUMNS)
    rows = []
    for entry in found["entries"]:
        cells = []
        for column in PAGE_COLUMNS:
            value = html.escape(str(entry.get(column, "")))
            if column == "traceId" and value:
                href = html.escape("/logs?" + urlencode({"trace": entry[column], "format": "html"}))
                value = f'<a class="trace-logs" href="{href}">{value}</a>'
            cells.append(f"<td>{value}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        "<style>body{font-family:sans-serif;font-size:13px}td,th{padding:2px 6px;text-align:left}"
        "tr:nth-child(even){background:#f3f5f7}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><p id="count">{found["count"]} entries, oldest first</p>'
        f'<table id="logs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></body></html>'
    )
