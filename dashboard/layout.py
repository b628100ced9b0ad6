"""What the dashboard shows: the top bar and the three tabs (Visibility, Sample chain,
Validation), every element with the id its callbacks (``dashboard.callbacks``) and the browser
tests find it by."""

from __future__ import annotations

from typing import Any

import dash_cytoscape as cyto
from dash import dcc, html

from clover.figures import SOURCES
from dashboard import figures

REFRESH_MS = 5000
TOP_CHOICES = (10, 20, 50)
SOURCE_CHOICES = [{"label": "each one's main source", "value": ""}] + [{"label": s, "value": s} for s in SOURCES]
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


def _panel(title: str, *children: Any, **kwargs: Any) -> html.Div:
    return html.Div([html.H2(title), *children], className="panel", **kwargs)


GRAPH_CONFIG: dcc.Graph.Config = {"displaylogo": False, "displayModeBar": "hover"}


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
            _panel("Slowest Requests (last hour, from the logs)", html.Div(
                "Each request once, at its first hop in the chain (the latency that hop logged).", className="muted"),
                   html.Div(id="slowest-table", className="scroll")),
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
            _panel("WAF (modsecurity-crs)", html.Div(id="waf-status", className="muted"),
                   html.Div(id="waf-alerts", className="scroll")),
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


GRAPH_STYLE = [
    {"selector": "node", "style": {"label": "data(label)", "width": "data(size)", "height": "data(size)",
                                   "background-color": "data(colour)", "font-size": "12px"}},
    {"selector": "edge", "style": {"label": "data(label)", "curve-style": "bezier", "target-arrow-shape": "triangle",
                                   "width": 2, "font-size": "10px", "text-rotation": "autorotate",
                                   "text-background-color": "#ffffff", "text-background-opacity": 0.8}},
    {"selector": ":selected", "style": {"border-width": 3, "border-color": "#1565c0", "line-color": "#1565c0",
                                        "target-arrow-color": "#1565c0"}},
]  # fmt: skip


def _graph_tab() -> dcc.Tab:
    """The mesh as a graph (dashboard/callbacks/graph.py)."""
    periods = [{"label": "whole retention", "value": "whole"}, {"label": "last 5 minutes", "value": "window"}]
    return dcc.Tab(
        label="Graph",
        value="graph",
        children=[
            _panel("Who calls whom", html.Div([
                html.Div([html.Label("Period"),
                          dcc.RadioItems(id="graph-period", options=periods, value="whole", inline=True)]),
                html.Div(id="graph-updated", className="muted"),
            ], className="controls"), html.Div(
                "Nodes are sized by the requests they answer per second and coloured by their error rate (green "
                "none, yellow 1%, orange 5%, red 20% or more; grey: a caller only). Select a node or an edge.",
                className="muted")),
            html.Div([
                _panel("Mesh", cyto.Cytoscape(id="mesh-graph", elements=[], layout={"name": "breadthfirst",
                                              "directed": True}, stylesheet=GRAPH_STYLE,
                                              style={"width": "100%", "height": "520px"})),
                _panel("Selected", html.Div("Select a node or an edge.", id="graph-details", className="muted")),
            ], className="row"),
        ],
    )  # fmt: skip


def _source_selector() -> html.Div:
    """Where the figures of the Visibility and Graph tabs were measured (each service's or edge's
    main source, or one source): one choice for both tabs."""
    return html.Div([html.Label("Figures measured by"),
                     dcc.RadioItems(id="figures-source", options=SOURCE_CHOICES, value="", inline=True)],
                    className="source-selector")  # fmt: skip


def layout(token_required: bool) -> html.Div:
    login = []
    if token_required:
        login = [
            dcc.Input(id="token-input", type="password", placeholder="API token", debounce=True),
            html.Span(id="token-state", className="muted"),
        ]
    return html.Div(
        [
            html.Div([html.H1("Clover Dashboards"), _source_selector(), *login], className="topbar"),
            dcc.Store(id="token", storage_type="session"),
            dcc.Store(id="clear-done"),
            dcc.Store(id="val-seen"),
            dcc.Interval(id="tick", interval=REFRESH_MS),
            html.Div(
                dcc.Tabs(
                    id="tabs",
                    value="visibility",
                    children=[_visibility_tab(), _graph_tab(), _chain_tab(), _validation_tab()],
                ),
                className="page",
            ),
        ]
    )
