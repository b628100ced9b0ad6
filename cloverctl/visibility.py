"""Visibility commands, through the controller's REST API (docs/compatibility.md §7):
``init|start|stop|clear|get|set visibility`` and the new ``check visibility``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click

from clover.figures import SOURCES, TABLE_FIGURES
from cloverctl import check as checks
from cloverctl import rest
from cloverctl.rest import output_option


@click.command("visibility", epilog=rest.EXIT_CODES_HELP)
@output_option
def init_visibility() -> None:
    """Create the visibility keyspace and tables in Cassandra (GET /collector/init)."""
    rest.text("GET", "/collector/init")


@click.command("visibility", epilog=rest.EXIT_CODES_HELP)
@click.option("-f", "--file", "file_", help="start_visibility.yaml: sample_interval, t_host/t_port, m_host/m_port.")
@output_option
def start_visibility(file_: str | None) -> None:
    """Start collecting traces and metrics (POST /collector/start). Fields missing from the file
    (or every field, without -f) take the controller's configured defaults; the controller
    refuses a bad field by name."""
    rest.text("POST", "/collector/start", rest.load_yaml(file_) if file_ else None)


@click.command("visibility", epilog=rest.EXIT_CODES_HELP)
@output_option
def stop_visibility() -> None:
    """Stop collecting (GET /collector/stop)."""
    rest.text("GET", "/collector/stop")


@click.command("visibility", epilog=rest.EXIT_CODES_HELP)
@output_option
def clear_visibility() -> None:
    """Truncate the visibility tables and reset the analysed results (GET /visibility/clear)."""
    rest.text("GET", "/visibility/clear")


@click.command("visibility", epilog=rest.EXIT_CODES_HELP)
@click.option("-f", "--file", "file_", required=True, help="set_visibility.yaml: services, metric prefixes/suffixes.")
@output_option
def set_visibility(file_: str) -> None:
    """Set the services and metrics visibility tracks (POST /visibility/set)."""
    rest.text("POST", "/visibility/set", rest.load_yaml(file_))


def _cell(value: Any) -> str:
    return "-" if value in (None, "") else str(value)


def columns(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    table = [list(header)] + [[_cell(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table)


COUNT_TITLES = (
    ("node_id_count", "Spans per node"),
    ("request_url_count", "Spans per URL"),
    ("status_code_count", "Spans per HTTP status code and URL"),
    ("user_agent_count", "Spans per user-agent"),
    ("node_url_count", "Spans per node and URL"),
)
SET_TITLES = (
    ("request_urls", "request URLs"),
    ("user_agents", "user agents"),
    ("status_codes", "status codes"),
    ("op_names", "operation names"),
    ("node_ids", "node ids"),
    ("upstream_clusters", "upstream clusters"),
)


def format_stats(stats: Mapping[str, Any], window: bool = False) -> str:
    """The stats JSON for people."""
    out: list[str] = []
    if "trace_count" in stats:
        out.append("System counts:")
        out.append(columns(("", "COUNT"), [(k, stats.get(f"{k[:-1]}_count")) for k in ("traces", "spans", "metrics")]))
    if "response_times" in stats:
        label = "the last 5 minutes" if window else "whole retention"
        out.append(f"\nRequests and response times in ms ({label}; each request once, SOURCE: where measured):")
        rows = []
        for r in stats["response_times"]:
            f = (r.get("window") or {}) if window else r
            rows.append([r["name"], *(figure.unit.show(f.get(figure.json)) for figure in TABLE_FIGURES)])
        head = ("SERVICE", *(figure.label.upper() for figure in TABLE_FIGURES))
        out.append(columns(head, rows) if rows else "  no tracked service")
        for key, title in COUNT_TITLES:
            pairs = stats.get(key) or []
            out.append(f"\n{title} (highest {len(pairs)}):")
            ranked = sorted(pairs, key=lambda p: (-p[1], p[0]))
            out.append(columns(("COUNT", "VALUE"), [(f"{c:.0f}", m) for m, c in ranked]) if ranked else "  none")
        out.append("\nDistinct values:")
        for key, title in SET_TITLES:
            values = stats.get(key) or []
            shown = ", ".join(values[:8]) + (f", … ({len(values) - 8} more)" if len(values) > 8 else "")
            out.append(f"  {title} ({len(values)}): {shown or '-'}")
    if "metrics_time" in stats:
        out.append("\nMonitoring metrics:")
        metrics = [
            (m["name"], len(m["values"]), m["values"][-1] if m["values"] else None) for m in stats["metrics_time"]
        ]
        out.append(columns(("METRIC", "SAMPLES", "LATEST"), metrics) if metrics else "  no tracked metric")
    return "\n".join(out).lstrip("\n")


def format_config(config: Mapping[str, Sequence[str]]) -> str:
    titles = (("visibility_services", "Tracked services"), ("metric_prefixes", "Metric prefixes"),
              ("metric_suffixes", "Metric suffixes"), ("custom_metrics", "Custom metrics"))  # fmt: skip
    return "\n".join(f"{title}: {', '.join(config[key]) or '-'}" for key, title in titles if key in config)


source_option = click.option(
    "--source",
    type=click.Choice(SOURCES),
    help="The figures as this source measured them (default: each service's source that saw most of its requests).",
)


@click.command("visibility", epilog=rest.EXIT_CODES_HELP)
@click.option("-s", "--stat", type=click.Choice(["system", "metrics", "tracing", "all"]), help="Analysed results.")
@click.option("-c", "--conf", type=click.Choice(["services", "metrics", "all"]), help="What visibility tracks.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    help="Entries of each count list (highest first; 0 = all). Default 51, or 10 in text output.",
)
@click.option("--window", is_flag=True, help="Show the last 5 minutes' response times instead of the whole retention.")
@source_option
@output_option
def get_visibility(stat: str | None, conf: str | None, limit: int | None, window: bool, source: str | None) -> None:
    """Show the analysed results (-s, default all) or what visibility tracks (-c)."""
    if stat and conf:
        raise rest.UsageProblem("give -s/--stat or -c/--conf, not both")
    if conf:
        config = rest.data("GET", f"/visibility/get/{conf}")
        click.echo(rest.json_dumps(config) if rest.json_output() else format_config(config))
        return
    if limit is None:
        limit = 51 if rest.json_output() else 10
    params: dict[str, Any] = {"limit": limit, **({"source": source} if source else {})}
    stats = rest.data("GET", f"/visibility/get/stats/{stat or 'all'}", params=params)
    click.echo(rest.json_dumps(stats) if rest.json_output() else format_stats(stats, window))


def _limits(given: Mapping[str, Sequence[str]]) -> list[checks.Limit]:
    limits = []
    for metric in checks.METRICS:
        for spec in given.get(metric.json, ()):
            try:
                limits.append(checks.parse_limit(metric, spec))
            except checks.SpecError as exc:
                raise rest.UsageProblem(str(exc)) from None
    return limits


def _check_options(fn: Any) -> Any:
    for metric in reversed(checks.METRICS):
        assert metric.check is not None  # checks.METRICS holds only the figures with a check option
        what = {"ms": "50ms, 0.5s", "fraction": "1% or 0.01", "count": "100"}.get(metric.unit.name, "2.5")
        fn = click.option(
            metric.check,
            metric.json,
            multiple=True,
            metavar="[SERVICE=]VALUE",
            help=f"{'Highest' if metric.bound == 'max' else 'Lowest'} allowed {metric.label.lower()} (e.g. {what}); "
            "without SERVICE= for every tracked service. Repeatable.",
        )(fn)
    return fn


@click.command("visibility", epilog=rest.EXIT_CODES_HELP + " A failed check exits 1.")
@_check_options
@click.option("--window", is_flag=True, help="Check the last 5 minutes instead of the whole retention.")
@click.option("--allow-missing", is_flag=True, help="A service or figure without data is skipped, not failed.")
@source_option
@output_option
def check_visibility(window: bool, allow_missing: bool, source: str | None, **given: Sequence[str]) -> None:
    """Assert limits on the analysed results, for CI: e.g.
    `--max-p99 proxy-access-control=50ms --max-error-rate 1%`. Prints a table; any failed check
    (or a service without data) exits 1."""
    limits = _limits(given)
    if not limits:
        raise rest.UsageProblem("give at least one limit, e.g. --max-p99 proxy-access-control=50ms")
    stats = rest.data(
        "GET", "/visibility/get/stats/tracing", params={"limit": 1, **({"source": source} if source else {})}
    )
    outcomes = checks.evaluate(limits, stats.get("response_times", []), window, allow_missing)
    bad = checks.failed(outcomes)
    if rest.json_output():
        rest.echo_json({"passed": not bad, "failed": len(bad), "checks": [o.as_dict() for o in outcomes]})
    else:
        click.echo(checks.table(outcomes))
        scope = "the last 5 minutes" if window else "the whole retention"
        click.echo(
            f"\n{len(bad)} of {len(outcomes)} checks failed ({scope})"
            if bad
            else f"\nall {len(outcomes)} checks passed ({scope})"
        )
    if bad:
        raise SystemExit(rest.EXIT_FAILED)
