"""Plotly figures as plain dicts (no figure-object validation: a refresh over 50 services and
1,000 URLs must stay cheap). Pure functions of the stats JSON, so they are easy to test.

Long categorical charts show the top N and one "others" bar; long series use WebGL
(``scattergl``), and the monitoring metrics share one WebGL plot per prefix/suffix pair
instead of one plot per series (a browser gives a page only a few WebGL contexts).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

LABEL_CHARS = 40
WEBGL_POINTS = 200  # a series longer than this is drawn with WebGL
MAX_POINTS = 20_000  # a longer load-test series is thinned to every n-th sample
COLORS = {"p50": "#4c78a8", "p90": "#f58518", "p99": "#e45756", "4xx": "#eeca3b", "5xx": "#e45756"}
FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12}


def number(value: Any) -> float | None:
    """A stats value as a float; None for "NA", null or anything unparsable."""
    if value is None:
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(result) else result


def short(label: str, limit: int = LABEL_CHARS) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def top_n(pairs: Iterable[Sequence[Any]], n: int, others: str = "others") -> tuple[list[str], list[float], int]:
    """The ``n`` largest (member, count) pairs, largest first, then one ``others (k)`` entry
    summing the remaining k members. Returns (labels, counts, k)."""
    ranked = sorted(((str(m), float(c)) for m, c in pairs), key=lambda p: (-p[1], p[0]))
    head, tail = ranked[:n], ranked[n:]
    labels = [m for m, _ in head]
    counts = [c for _, c in head]
    if tail:
        labels.append(f"{others} ({len(tail)})")
        counts.append(sum(c for _, c in tail))
    return labels, counts, len(tail)


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "title": {"text": title, "font": {"size": 12, "color": "#6b7280"}, "x": 0.01, "xanchor": "left"},
        "margin": {"l": 50, "r": 20, "t": 30, "b": 40},
        "font": FONT,
        "paper_bgcolor": "white",
        "plot_bgcolor": "#fafafa",
        "height": 360,
        "uirevision": title,  # keep zoom and hidden traces across refreshes
    }
    layout.update(extra)
    return layout


def empty(title: str, note: str = "no data yet") -> dict[str, Any]:
    return {
        "data": [],
        "layout": _layout(
            title,
            xaxis={"visible": False},
            yaxis={"visible": False},
            annotations=[{"text": note, "showarrow": False, "font": {"size": 14, "color": "#888"}}],
        ),
    }


def count_bars(pairs: Iterable[Sequence[Any]], title: str, x_title: str, n: int, unit: str = "spans") -> dict[str, Any]:
    """Horizontal bars, largest on top: the top ``n`` members and one grey "others" bar. When
    "others" would dwarf the rest, the axis ends just past the largest member and the "others"
    bar runs off it, its value written on it."""
    labels, counts, rest = top_n(pairs, n)
    if not labels:
        return empty(title)
    top_max = max(counts[: len(counts) - (1 if rest else 0)] or counts)
    clipped = bool(rest) and counts[-1] > 1.5 * top_max
    colors = ["#4c78a8"] * len(labels)
    text = [""] * len(labels)
    if rest:
        colors[-1] = "#9ca3af"
        text[-1] = f"{counts[-1]:,.0f} {unit} in {rest} more" + (" ▶" if clipped else "")
    xaxis: dict[str, Any] = {"title": {"text": unit}, "rangemode": "tozero"}
    if clipped:
        xaxis["range"] = [0, top_max * 1.15]
    return {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "y": labels[::-1],
                "x": counts[::-1],
                "text": text[::-1],
                "textposition": "inside",
                "insidetextanchor": "start",
                "marker": {"color": colors[::-1]},
                "hovertemplate": "%{y}<br>%{x:,.0f} " + unit + "<extra></extra>",
            }
        ],
        "layout": _layout(
            title,
            height=max(260, 60 + 22 * len(labels)),
            xaxis=xaxis,
            yaxis={
                "title": {"text": x_title},
                "tickvals": labels,
                "ticktext": [short(label) for label in labels],
                "automargin": True,
            },
        ),
    }


def share_pie(pairs: Iterable[Sequence[Any]], title: str, n: int) -> dict[str, Any]:
    """The user-agent share: a slice per member (top ``n`` and "others"), in % of the total."""
    labels, counts, _ = top_n(pairs, n)
    total = sum(counts)
    if not total:
        return empty(title)
    return {
        "data": [
            {
                "type": "pie",
                "labels": [short(label) for label in labels],
                "values": [round(100 * c / total) for c in counts],
                "customdata": [[label, c] for label, c in zip(labels, counts, strict=True)],
                "hovertemplate": "%{customdata[0][0]}<br>%{customdata[0][1]:,.0f} spans (%{percent})<extra></extra>",
                "textinfo": "percent",
                "sort": False,
            }
        ],
        "layout": _layout(title, legend={"font": {"size": 10}}),
    }


def busiest(rows: Sequence[Mapping[str, Any]], n: int) -> list[Mapping[str, Any]]:
    """The ``n`` services with the most requests (then by name)."""
    return sorted(rows, key=lambda r: (-(number(r.get("request_count")) or 0), str(r.get("name"))))[:n]


def latency_bars(
    rows: Sequence[Mapping[str, Any]], n: int, title: str = "Response time percentiles (ms)"
) -> dict[str, Any]:
    """p50/p90/p99 per service, grouped, for the ``n`` busiest services."""
    shown = busiest(rows, n)
    if not any(number(r.get("p50")) is not None for r in shown):
        return empty(title)
    names = [str(r["name"]) for r in shown]
    data = [
        {
            "type": "bar",
            "name": key,
            "x": names,
            "y": [number(r.get(key)) for r in shown],
            "marker": {"color": COLORS[key]},
            "hovertemplate": "%{x}<br>" + key + " %{y:.2f} ms<extra></extra>",
        }
        for key in ("p50", "p90", "p99")
    ]
    more = len(rows) - len(shown)
    return {
        "data": data,
        "layout": _layout(
            title + (f" — {len(shown)} busiest of {len(rows)} services" if more > 0 else ""),
            barmode="group",
            xaxis={"tickangle": -30, "automargin": True},
            yaxis={"title": {"text": "ms"}, "rangemode": "tozero"},
            legend={"orientation": "h", "y": 1.12},
        ),
    }


def error_bars(rows: Sequence[Mapping[str, Any]], n: int, title: str = "Error rate (%)") -> dict[str, Any]:
    """4xx and 5xx error rates per service (stacked, in %), for the ``n`` busiest services."""
    shown = busiest(rows, n)
    if not any(number(r.get("request_count")) for r in shown):
        return empty(title)
    names = [str(r["name"]) for r in shown]

    def pct(row: Mapping[str, Any], key: str) -> float | None:
        value = number(row.get(key))
        return None if value is None else round(100 * value, 2)

    data = [
        {
            "type": "bar",
            "name": label,
            "x": names,
            "y": [pct(r, key) for r in shown],
            "marker": {"color": COLORS[label]},
            "hovertemplate": "%{x}<br>" + label + " %{y:.2f}%<extra></extra>",
        }
        for label, key in (("4xx", "error_rate_4xx"), ("5xx", "error_rate_5xx"))
    ]
    return {
        "data": data,
        "layout": _layout(
            title,
            barmode="stack",
            xaxis={"tickangle": -30, "automargin": True},
            yaxis={"title": {"text": "% of requests"}, "rangemode": "tozero"},
            legend={"orientation": "h", "y": 1.12},
        ),
    }


def metric_plots(entries: Sequence[Mapping[str, Any]], n: int) -> list[dict[str, Any]]:
    """One figure per (prefix, suffix): a WebGL line per service (the ``n`` with the most
    recent values), x = sample index (oldest first), y = value."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for entry in entries:
        groups[(str(entry["prefix"]), str(entry["suffix"]))].append(entry)
    figures = []
    for (prefix, suffix), members in sorted(groups.items()):
        with_values = [m for m in members if m.get("values")]
        with_values.sort(key=lambda m: (-(number(m["values"][-1]) or 0), str(m["service"])))
        shown = with_values[:n]
        title = f"{prefix}<b>&lt;service&gt;</b>{suffix}"
        if not shown:
            figures.append(empty(title))
            continue
        data = [
            {
                "type": "scattergl",
                "mode": "lines+markers",
                "name": str(m["service"]),
                "x": list(range(len(m["values"]))),
                "y": [number(v) for v in m["values"]],
                "hovertemplate": str(m["service"]) + "<br>#%{x}: %{y}<extra></extra>",
            }
            for m in shown
        ]
        more = len(with_values) - len(shown)
        figures.append(
            {
                "data": data,
                "layout": _layout(
                    title + (f" ({len(shown)} of {len(with_values)} services)" if more > 0 else ""),
                    xaxis={"title": {"text": "sample (oldest first)"}},
                    yaxis={"title": {"text": "value"}},
                    legend={"font": {"size": 10}},
                ),
            }
        )
    return figures


def latency_timeline(samples: Sequence[Mapping[str, Any]], title: str = "Load test latency (ms)") -> dict[str, Any]:
    """Each sample's elapsed time at its start time, a series per label (WebGL when long)."""
    by_label: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for sample in samples:
        by_label[str(sample.get("label", ""))].append(sample)
    if not by_label:
        return empty(title, "no load test results yet")
    data = []
    thinned = False
    for label, rows in sorted(by_label.items()):
        rows.sort(key=lambda r: int(r.get("timestamp", 0)))
        if len(rows) > MAX_POINTS:
            rows = rows[:: math.ceil(len(rows) / MAX_POINTS)]
            thinned = True
        data.append(
            {
                "type": "scattergl" if len(rows) > WEBGL_POINTS else "scatter",
                "mode": "markers",
                "name": label,
                "x": [datetime.fromtimestamp(int(r["timestamp"]) / 1000, UTC).isoformat() for r in rows],
                "y": [int(r.get("elapsed", 0)) for r in rows],
                "marker": {"size": 5},
                "hovertemplate": label + "<br>%{x}<br>%{y} ms<extra></extra>",
            }
        )
    return {
        "data": data,
        "layout": _layout(
            title + (f" (every n-th sample, at most {MAX_POINTS:,} per label)" if thinned else ""),
            xaxis={"title": {"text": "time (UTC)"}},
            yaxis={"title": {"text": "ms"}},
        ),
    }
