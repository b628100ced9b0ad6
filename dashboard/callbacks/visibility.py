"""The Visibility tab: the 5 s refresh of every chart and table, the Discovered Services
selection (what visibility tracks) and Clear."""

from __future__ import annotations

import os
import time
from typing import Any

from dash import Dash, Input, Output, State, ctx, dcc, html, no_update

from clover import keys
from controller.errors import ApiError
from controller.services.visibility import TRACK_ONE, VisibilityService
from dashboard import views
from dashboard.callbacks.replies import failure, ok
from dashboard.callbacks.token import TokenGate, refused
from dashboard.layout import GRAPH_CONFIG
from logstore.query import LogFilter, LogStore, LogStoreError
from logstore.settings import LogSettings

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


def visibility_refresh(visibility: VisibilityService, top: int, source: str | None = None) -> dict[str, Any]:
    """One full refresh of the Visibility view (what the 5 s timer runs); ``source``: the figures
    as that source measured them (None: each service's headline source)."""
    stats = visibility.stats("all", None, source or None)
    result = views.refresh(stats, visibility.metric_values(), top)
    result["metric_plots"] = [dcc.Graph(figure=f, config=GRAPH_CONFIG) for f in result["metric_plots"]]
    return result


def slowest_table() -> Any:
    """The slowest requests of the last hour, as the log store has them."""
    settings = LogSettings.from_env(os.environ)
    try:
        entries = LogStore(settings.store_url).slowest(LogFilter(since="1h", stream=settings.stream))
    except LogStoreError as exc:
        return html.Div(f"no logs: {exc}", className="muted")
    return views.table(
        views.SLOWEST_HEADER, views.slowest_rows(entries), "slowest", "no request logged in the last hour"
    )


def register(app: Dash, visibility: VisibilityService, gate: TokenGate) -> None:
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
            result = visibility_refresh(visibility, int(top or 20), source)
        except ApiError as exc:
            return [no_update] * (len(VIS_OUTPUTS) - 1) + [failure(exc)]
        return [result[key] for _, _, key in VIS_OUTPUTS]

    @app.callback(Output("slowest-table", "children"), Input("tick", "n_intervals"), Input("tabs", "value"))
    def slowest(_: Any, tab: str) -> Any:
        if tab != "visibility":
            return no_update
        return slowest_table()

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
            if not gate.allows(given):
                message = refused()
            elif not selected:
                message = failure(ApiError(400, TRACK_ONE))
            else:
                try:
                    visibility.set_services(sorted(selected))
                    message = ok(f"Tracking {len(selected)} service(s)")
                except ApiError as exc:
                    message = failure(exc)
        tracked = [keys.hyphen(s) for s in visibility.config("services")["visibility_services"]]
        discovered = visibility.discovered_services()
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
        if not gate.allows(given):
            return refused(), no_update
        try:
            return ok(visibility.clear()), time.time()
        except ApiError as exc:
            return failure(exc), no_update
