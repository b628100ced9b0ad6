"""The dashboard (Dash + Plotly), mounted in the controller's Flask app.

Three views: **Visibility** (the original's dashboard, docs/compatibility.md §5e, with percentiles and error
rates), **Sample chain** (the load balancers' server lists, IDS rules, IDS start/stop, the
newest IDS alerts) and **Validation** (the last load test's summary and latency plot).

Callbacks call the controller's Backend directly (same process, no HTTP round trip). When
``CLOVER_API_TOKEN`` is set, every control that changes something asks for the token first
(kept in the browser tab's session storage), as the REST API does.
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import asdict
from typing import Any

import redis
import yaml
from dash import Dash, Input, Output, State, ctx, dcc, html, no_update
from flask import Flask

from clover import keys
from clover.figures import SOURCES
from controller.errors import ApiError
from controller.service import Backend
from dashboard import figures, views

REFRESH_MS = 5000
TOP_CHOICES = (10, 20, 50)
SOURCE_CHOICES = [{"label": "the main source of each service", "value": ""}] + [
    {"label": s, "value": s} for s in SOURCES
]
SERVERS = tuple(f"clover-server{i}:9180" for i in range(1, 6))
LBS = ("http-lb-v1", "http-lb-v2")
SAMPLE_RULE = """\
# one rule (idsrule_*.yaml); it takes effect after Stop IDS and Start IDS
sid: "10000003"
protocol: tcp
dest_port: any
dest_ip: $HOME_NET
src_port: any
src_ip: any
msg: MALWARE-CNC User-Agent ASafaWeb Scan
rev: "001"
content: '"asafaweb.com"'
"""

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 0; background: #f3f4f6;
       color: #1f2937; }
.topbar { background: #1f3a5f; color: white; padding: 10px 20px; display: flex; align-items: center; gap: 24px;
          flex-wrap: wrap; }
.topbar h1 { font-size: 20px; margin: 0; font-weight: 600; }
.topbar input { padding: 4px 6px; }
.page { padding: 12px 20px; }
.panel { background: white; border-radius: 6px; padding: 12px 16px; margin-bottom: 14px;
         box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.panel h2 { font-size: 15px; margin: 0 0 10px 0; color: #1f3a5f; }
.row { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 14px; }
.controls { display: flex; flex-wrap: wrap; gap: 28px; align-items: flex-start; }
.controls > div { min-width: 160px; }
.counts { display: flex; gap: 28px; }
.count { display: flex; flex-direction: column; align-items: center; min-width: 90px; }
.count-value { font-size: 28px; font-weight: 600; color: #1f3a5f; }
.count-label { font-size: 12px; color: #6b7280; text-transform: uppercase; letter-spacing: .05em; }
.grid table { border-collapse: collapse; width: 100%; font-size: 13px; }
.grid th, .grid td { border-bottom: 1px solid #e5e7eb; padding: 4px 8px; text-align: left; }
.grid th { background: #f9fafb; position: sticky; top: 0; }
.grid td:first-child { white-space: nowrap; }
.grid p { margin: 0; }
.scroll { max-height: 420px; overflow: auto; }
pre.details { max-height: 300px; overflow: auto; background: #f9fafb; padding: 8px; font-size: 12px; margin: 0; }
.muted { color: #6b7280; }
.ok { color: #047857; }
.error { color: #b91c1c; white-space: pre-wrap; }
button { background: #1f3a5f; color: white; border: 0; border-radius: 4px; padding: 6px 14px; cursor: pointer; }
button.secondary { background: #6b7280; }
button:hover { filter: brightness(1.15); }
#services label { display: inline-block; margin: 2px 6px 2px 0; padding: 3px 8px; border: 1px solid #cbd5e1;
                  border-radius: 4px; background: #f8fafc; }
textarea { font-family: ui-monospace, monospace; font-size: 12px; width: 100%; }
"""


def _index(css: str) -> str:
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n{%metas%}\n<title>{%title%}</title>\n{%favicon%}\n{%css%}\n"
        f"<style>{css}</style>\n</head>\n<body>\n{{%app_entry%}}\n<footer>\n{{%config%}}\n{{%scripts%}}\n"
        "{%renderer%}\n</footer>\n</body>\n</html>"
    )


def _panel(title: str, *children: Any, **kwargs: Any) -> html.Div:
    return html.Div([html.H2(title), *children], className="panel", **kwargs)


GRAPH_CONFIG = {"displaylogo": False, "displayModeBar": "hover"}


def _graph(graph_id: str) -> dcc.Graph:
    return dcc.Graph(id=graph_id, figure=figures.empty(""), config=GRAPH_CONFIG)


def _visibility_tab() -> dcc.Tab:
    controls = _panel(
        "Visibility Controls",
        html.Div(
            [
                html.Div([html.Label("Auto-refresh (5 s)"),
                          dcc.RadioItems(id="refresh-switch", options=[{"label": "On", "value": "on"},
                                                                       {"label": "Off", "value": "off"}],
                                         value="on", inline=True)]),
                html.Div([dcc.ConfirmDialogProvider(
                              html.Button("Clear", id="clear-button"), id="clear",
                              message="Clear all visibility data? This truncates the Cassandra tables and resets "
                                      "the analysed results in Redis."),
                          html.Div(id="clear-result")]),
                html.Div([html.Label("Figures measured by"),
                          dcc.RadioItems(id="figures-source", options=SOURCE_CHOICES, value="", inline=True)]),
                html.Div([html.Label("Top N in charts"),
                          dcc.Dropdown(id="top-n", options=[{"label": str(n), "value": n} for n in TOP_CHOICES],
                                       value=20, clearable=False, style={"width": "90px"})]),
                html.Div(id="updated", className="muted"),
            ],
            className="controls",
        ),
        html.H2("Discovered Services", style={"marginTop": "12px"}),
        dcc.Checklist(id="services", options=[], value=[], inline=True),
        html.Div(id="services-result"),
        html.Details([html.Summary("Visibility Services"), html.Ul(id="tracked-list")]),
    )  # fmt: skip
    return dcc.Tab(
        label="Visibility",
        value="visibility",
        children=[
            controls,
            html.Div([
                _panel("Visibility System Counts", html.Div(id="counts", className="counts")),
                _panel("Service Requests and Response Times", html.Div(
                    "Each request once, from its server-side span; the Source column names where it was measured "
                    "(the application's tracer, or Clovisor on the network).", className="muted"),
                       html.Div(id="rt-table", className="scroll")),
            ], className="row"),
            html.Div([_panel("Latency", _graph("latency-chart")), _panel("Errors", _graph("error-chart"))],
                     className="row"),
            html.Div("The charts below count spans, as the original's group-by keys do: every span of every "
                     "source (a request crossing three services and two tracers is several spans).",
                     className="muted panel"),
            html.Div([_panel("Per Service Counts (spans)", _graph("per-service-chart")),
                      _panel("Per URL Counts (spans)", _graph("per-url-chart"))], className="row"),
            html.Div([_panel("Per URL / HTTP Status Codes (spans)", _graph("per-status-chart")),
                      _panel("User-Agent Percentage (spans)", _graph("user-agent-chart"))], className="row"),
            _panel("Per Service/URL Counts (spans)", _graph("per-service-url-chart")),
            html.Div([
                _panel("HTTP Details", dcc.Tabs([
                    dcc.Tab(label="User-Agents", children=html.Div(id="ua-list")),
                    dcc.Tab(label="Request URLs", children=html.Div(id="url-list")),
                    dcc.Tab(label="Status Codes", children=html.Div(id="status-list")),
                ])),
                _panel("Tracing Name Parameters",
                       html.Details([html.Summary("Operation Names"), html.Div(id="op-list")]),
                       html.Details([html.Summary("Node IDs"), html.Div(id="node-list")]),
                       html.Details([html.Summary("Upstream Cluster"), html.Div(id="cluster-list")])),
            ], className="row"),
            _panel("Monitoring Metrics", html.Div(id="metrics-table", className="scroll"),
                   html.Div(id="metric-plots", className="row")),
        ],
    )  # fmt: skip


def _lb_control(lb: str) -> html.Div:
    return html.Div(
        [
            html.H2(f"{lb} servers"),
            dcc.Checklist(id=f"{lb}-servers", options=[{"label": s, "value": s} for s in SERVERS], value=[]),
            html.Button("Apply", id=f"{lb}-apply"),
        ]
    )


def _chain_tab() -> dcc.Tab:
    return dcc.Tab(
        label="Sample chain",
        value="chain",
        children=[
            _panel("Load balancers", html.Div([_lb_control(lb) for lb in LBS], className="controls"),
                   html.Div(id="lb-result"),
                   html.Button("Reload", id="chain-refresh", className="secondary", style={"marginTop": "8px"})),
            html.Div([
                _panel("IDS", html.Div([html.Button("Start IDS", id="ids-start"),
                                        html.Button("Stop IDS", id="ids-stop", className="secondary")],
                                       className="controls"),
                       html.Div(id="ids-result"), html.Div(id="ids-status", className="muted"),
                       html.H2("Add a rule", style={"marginTop": "12px"}),
                       dcc.Textarea(id="rule-text", value=SAMPLE_RULE, style={"height": "190px"}),
                       html.Button("Add rule", id="rule-add"), html.Div(id="rule-result")),
                _panel("Local rules", html.Div(id="rules-table", className="scroll")),
            ], className="row"),
            _panel("Recent IDS alerts", html.Div(id="alerts-count", className="muted"),
                   html.Div(id="alerts-table", className="scroll")),
        ],
    )  # fmt: skip


def _validation_tab() -> dcc.Tab:
    return dcc.Tab(
        label="Validation",
        value="validation",
        children=[
            _panel("Latest load test", html.Div(id="val-status"),
                   html.Button("Reload", id="val-refresh", className="secondary")),
            _panel("Summary", html.Div(id="val-summary", className="scroll")),
            _panel("Latency", _graph("val-latency")),
        ],
    )  # fmt: skip


def layout(token_required: bool) -> html.Div:
    login = []
    if token_required:
        login = [
            dcc.Input(id="token-input", type="password", placeholder="API token", debounce=True),
            html.Span(id="token-state", className="muted"),
        ]
    return html.Div(
        [
            html.Div([html.H1("Clover Dashboards"), *login], className="topbar"),
            dcc.Store(id="token", storage_type="session"),
            dcc.Store(id="clear-done"),
            dcc.Store(id="val-seen"),
            dcc.Interval(id="tick", interval=REFRESH_MS),
            html.Div(
                dcc.Tabs(id="tabs", value="visibility", children=[_visibility_tab(), _chain_tab(), _validation_tab()]),
                className="page",
            ),
        ]
    )


def _failure(exc: ApiError) -> html.Div:
    return html.Div(f"{exc.message}", className="error")


def _ok(text: str) -> html.Div:
    return html.Div(text, className="ok")


def _reply(text: str) -> html.Div:
    """A relayed reply: the original's replies say "Failed ..." when nothing was done."""
    return html.Div(text, className="error" if text.startswith("Failed") else "ok")


VIS_OUTPUTS = (
    ("counts", "children", "counts"),
    ("rt-table", "children", "rt_table"),
    ("latency-chart", "figure", "latency"),
    ("error-chart", "figure", "errors"),
    ("per-service-chart", "figure", "per_service"),
    ("per-url-chart", "figure", "per_url"),
    ("per-status-chart", "figure", "per_status"),
    ("user-agent-chart", "figure", "user_agents"),
    ("per-service-url-chart", "figure", "per_service_url"),
    ("ua-list", "children", "ua_list"),
    ("url-list", "children", "url_list"),
    ("status-list", "children", "status_list"),
    ("op-list", "children", "op_list"),
    ("node-list", "children", "node_list"),
    ("cluster-list", "children", "cluster_list"),
    ("metrics-table", "children", "metrics_table"),
    ("metric-plots", "children", "metric_plots"),
    ("updated", "children", "updated"),
)


def visibility_refresh(backend: Backend, top: int, source: str | None = None) -> dict[str, Any]:
    """One full refresh of the Visibility view (what the 5 s timer runs); ``source``: the figures
    as that source measured them (None: each service's headline source)."""
    stats = backend.stats("all", None, source or None)
    result = views.refresh(stats, backend.metric_values(), top)
    result["metric_plots"] = [dcc.Graph(figure=f, config=GRAPH_CONFIG) for f in result["metric_plots"]]
    return result


def create_dashboard(server: Flask, backend: Backend, path: str = "/dashboard/") -> Dash:
    """Mount the dashboard on ``server`` at ``path``."""
    token = backend.cfg.api_token
    app = Dash(
        "clover-dashboard",
        server=server,
        url_base_pathname=path,
        title="Clover",
        update_title=None,
        serve_locally=True,
        index_string=_index(CSS),
        assets_folder="/nonexistent-clover-assets",
    )
    app.layout = lambda: layout(bool(token))

    def allowed(given: Any) -> bool:
        return not token or (isinstance(given, str) and hmac.compare_digest(given.encode(), token.encode()))

    def refused() -> html.Div:
        return html.Div("Enter the API token (top right) to change anything.", className="error")

    if token:

        @app.callback(Output("token", "data"), Output("token-state", "children"), Input("token-input", "value"))
        def save_token(value: str | None) -> tuple[Any, str]:
            if not value:
                return no_update, "not logged in"
            return value, "token accepted" if allowed(value) else "wrong token"

    @app.callback(Output("tick", "disabled"), Input("refresh-switch", "value"))
    def switch(value: str) -> bool:
        return value != "on"

    @app.callback(
        [Output(c, p) for c, p, _ in VIS_OUTPUTS],
        Input("tick", "n_intervals"),
        Input("top-n", "value"),
        Input("clear-done", "data"),
        Input("tabs", "value"),
        Input("figures-source", "value"),
    )
    def refresh(_: Any, top: int, __: Any, tab: str, source: str | None) -> list[Any]:
        if tab != "visibility":
            return [no_update] * len(VIS_OUTPUTS)
        try:
            result = visibility_refresh(backend, int(top or 20), source)
        except ApiError as exc:
            return [no_update] * (len(VIS_OUTPUTS) - 1) + [_failure(exc)]
        return [result[key] for _, _, key in VIS_OUTPUTS]

    @app.callback(
        Output("services", "options"),
        Output("services", "value"),
        Output("services-result", "children"),
        Output("tracked-list", "children"),
        Input("tick", "n_intervals"),
        Input("services", "value"),
        State("token", "data"),
    )
    def services(_: Any, selected: list[str] | None, given: Any) -> tuple[Any, Any, Any, Any]:
        """The Discovered Services: selecting or unselecting one sets the tracked services."""
        message: Any = no_update
        if ctx.triggered_id == "services":
            if not allowed(given):
                message = refused()
            elif not selected:
                message = _failure(ApiError(400, "Specify at least one service to track"))
            else:
                try:
                    backend.set_services(sorted(selected))
                    message = _ok(f"Tracking {len(selected)} service(s)")
                except ApiError as exc:
                    message = _failure(exc)
        tracked = [keys.hyphen(s) for s in backend.config("services")["visibility_services"]]
        discovered = backend.discovered_services()
        options = [{"label": s, "value": s} for s in sorted(set(discovered) | set(tracked))]
        value: Any = tracked if tracked != sorted(selected or []) else no_update
        return options, value, message, [html.Li(s) for s in tracked] or [html.Li("none", className="muted")]

    @app.callback(
        Output("clear-result", "children"),
        Output("clear-done", "data"),
        Input("clear", "submit_n_clicks"),
        State("token", "data"),
        prevent_initial_call=True,
    )
    def clear(_: Any, given: Any) -> tuple[Any, Any]:
        if not allowed(given):
            return refused(), no_update
        try:
            return _ok(backend.clear()), time.time()
        except ApiError as exc:
            return _failure(exc), no_update

    # -- sample chain ------------------------------------------------------------------------

    @app.callback(
        [Output(f"{lb}-servers", "options") for lb in LBS] + [Output(f"{lb}-servers", "value") for lb in LBS],
        Input("tabs", "value"),
        Input("chain-refresh", "n_clicks"),
        Input("lb-result", "children"),
    )
    def lb_state(tab: str, _: Any, __: Any) -> list[Any]:
        if tab != "chain":
            return [no_update] * (2 * len(LBS))
        options, values = [], []
        for lb in LBS:
            try:
                current = list(backend.chain_config(lb).get("lb", {}).get("slb_list", []))
            except ApiError:
                current = []
            choices = list(SERVERS) + [s for s in current if s not in SERVERS]
            options.append([{"label": s, "value": s} for s in choices])
            values.append(current)
        return options + values

    @app.callback(
        Output("lb-result", "children"),
        [Input(f"{lb}-apply", "n_clicks") for lb in LBS],
        [State(f"{lb}-servers", "value") for lb in LBS],
        State("token", "data"),
        prevent_initial_call=True,
    )
    def lb_apply(*args: Any) -> Any:
        given = args[-1]
        chosen = dict(zip(LBS, args[len(LBS) : 2 * len(LBS)], strict=True))
        lb = str(ctx.triggered_id).removesuffix("-apply")
        if lb not in chosen:
            return no_update
        if not allowed(given):
            return refused()
        try:
            current = backend.chain_config(lb).get("lb", {})
            body = {
                "lb_name": f"{lb}.default",
                "server_name": lb,
                "server_port": current.get("server_port") or "9180",
                "lb_group": current.get("slb_group") or "cloverlb",
                "lb_path": current.get("lb_path") or "/",
                "lb_list": [{"url": url} for url in (chosen[lb] or [])],
            }
            return _ok(f"{lb}: {backend.modify_lb(body)} ({', '.join(chosen[lb])})")
        except ApiError as exc:
            return _failure(exc)

    @app.callback(
        Output("ids-result", "children"),
        Input("ids-start", "n_clicks"),
        Input("ids-stop", "n_clicks"),
        State("token", "data"),
        prevent_initial_call=True,
    )
    def ids_control(_: Any, __: Any, given: Any) -> Any:
        if not allowed(given):
            return refused()
        try:
            return _reply(backend.start_ids() if ctx.triggered_id == "ids-start" else backend.stop_ids())
        except ApiError as exc:
            return _failure(exc)

    @app.callback(
        Output("rule-result", "children"),
        Input("rule-add", "n_clicks"),
        State("rule-text", "value"),
        State("token", "data"),
        prevent_initial_call=True,
    )
    def rule_add(_: Any, text: str, given: Any) -> Any:
        if not allowed(given):
            return refused()
        try:
            rule = yaml.safe_load(text or "")
        except yaml.YAMLError as exc:
            return _failure(ApiError(400, f"the rule is not valid yaml: {exc}"))
        try:
            return _ok(backend.add_rule(rule))
        except ApiError as exc:
            return _failure(exc)

    @app.callback(
        Output("ids-status", "children"),
        Output("rules-table", "children"),
        Output("alerts-count", "children"),
        Output("alerts-table", "children"),
        Input("tabs", "value"),
        Input("tick", "n_intervals"),
        Input("chain-refresh", "n_clicks"),
        Input("ids-result", "children"),
        Input("rule-result", "children"),
    )
    def ids_state(tab: str, *_: Any) -> tuple[Any, Any, Any, Any]:
        if tab != "chain":
            return no_update, no_update, no_update, no_update
        try:
            s = backend.ids_status()
            status: Any = (
                f"{'running' if s.get('running') else 'stopped'}"
                + (f" (pid {s.get('pid')})" if s.get("running") else "")
                + f", {s.get('rules_loaded', 0)} rules loaded, {s.get('requests_inspected', 0)} requests inspected,"
                f" {s.get('alerts', 0)} alerts"
            )
            rules = backend.ids_rules()
            rule_rows = [[r["sid"], r.get("rev", ""), r.get("msg", ""), "yes" if r.get("loaded") else "no"]
                         for r in rules]  # fmt: skip
            rules_table: Any = views.table(["sid", "rev", "msg", "loaded"], rule_rows, "rules-grid", "no local rules")
        except ApiError as exc:
            status, rules_table = _failure(exc), no_update
        try:
            found = backend.alerts(20)
        except redis.RedisError as exc:
            return status, rules_table, _failure(ApiError(503, f"Redis unavailable: {exc}")), no_update
        return (
            status,
            rules_table,
            f"{found['total']} alert(s) in Redis; the newest {len(found['alerts'])}:",
            views.table(views.ALERT_HEADER, views.alert_rows(found["alerts"]), "alerts-grid", "no alerts"),
        )

    # -- validation --------------------------------------------------------------------------

    @app.callback(
        Output("val-status", "children"),
        Output("val-summary", "children"),
        Output("val-latency", "figure"),
        Output("val-seen", "data"),
        Input("tabs", "value"),
        Input("val-refresh", "n_clicks"),
        Input("tick", "n_intervals"),
        State("val-seen", "data"),
    )
    def validation_view(tab: str, _: Any, __: Any, seen: Any) -> tuple[Any, Any, Any, Any]:
        if tab != "validation":
            return no_update, no_update, no_update, no_update
        try:
            status = backend.test_status()
        except ApiError as exc:
            unreachable = figures.empty("Load test latency (ms)", "validation service unreachable")
            return _failure(exc), no_update, unreachable, None
        mark = f"{status['run_id']}:{status['state']}:{status['samples']}"
        if ctx.triggered_id == "tick" and mark == seen:
            return no_update, no_update, no_update, no_update  # nothing new: do not re-read the results
        if status["state"] == "idle":
            return (
                "No load test has been run yet.",
                views.table(views.SUMMARY_HEADER, [], "summary-grid"),
                figures.empty("Load test latency (ms)", "no load test results yet"),
                mark,
            )
        line = (f"Run {status['run_id']} ({status['test_plan']}): {status['state']}, {status['samples']} samples, "
                f"{status['errors']} errors" + (f" — {status['detail']}" if status.get("detail") else ""))  # fmt: skip
        try:
            summary = [asdict(r) for r in backend.results("summary").summary]
            samples = json.loads(backend.results("detail", "json").content or "[]")
        except (ApiError, ValueError) as exc:
            return line, html.Div(str(exc), className="error"), no_update, None
        return (
            line,
            views.table(views.SUMMARY_HEADER, views.summary_rows(summary), "summary-grid"),
            figures.latency_timeline(samples),
            mark,
        )

    return app
