"""The Graph tab: the mesh's caller -> callee edges (GET /visibility/get/graph's data) drawn with
dash-cytoscape, refreshed with the 5 s timer; a selected node shows its figures, a selected edge
its URLs and status codes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dash import Dash, Input, Output, ctx, html, no_update

from clover.figures import BY_JSON, TABLE_FIGURES
from controller.errors import ApiError
from controller.services.graph import GraphService
from dashboard import views
from dashboard.callbacks.replies import failure

NODE_SIZE = (30, 90)  # px, the quietest and the busiest node
# Error rate thresholds (fraction) and the node colour at or above each.
ERROR_COLOURS = ((0.0, "#2e7d32"), (0.01, "#f9a825"), (0.05, "#ef6c00"), (0.2, "#c62828"))


def error_colour(error_rate: float | None) -> str:
    colour = "#9e9e9e"  # answered nothing: a caller only
    for threshold, shade in ERROR_COLOURS:
        if error_rate is not None and error_rate >= threshold:
            colour = shade
    return colour


def elements(graph: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Cytoscape elements: nodes sized by request rate and coloured by error rate, edges labelled
    with their rate and p99."""
    busiest = max((n["request_rate"] for n in graph["nodes"]), default=0.0) or 1.0
    low, high = NODE_SIZE
    found: list[dict[str, Any]] = []
    for node in graph["nodes"]:
        size = low + (high - low) * node["request_rate"] / busiest
        found.append({"data": {"id": node["name"], "label": node["name"], "size": round(size),
                               "colour": error_colour(node["error_rate"]), "node": node}})  # fmt: skip
    for edge in graph["edges"]:
        label = f"{edge.get('request_rate') or 'NA'} req/s · p99 {edge.get('p99') or 'NA'} ms"
        found.append({"data": {"id": f"{edge['caller']} -> {edge['callee']}", "source": edge["caller"],
                               "target": edge["callee"], "label": label, "edge": edge}})  # fmt: skip
    return found


def node_details(node: Mapping[str, Any]) -> list[Any]:
    rate = node["error_rate"]
    rows = [
        ["Requests answered", node["request_count"]],
        ["Request rate (req/s)", node["request_rate"]],
        ["Errors", node["errors"]],
        ["Error rate", "-" if rate is None else f"{100 * rate:.2f}%"],
        ["Called by", ", ".join(node["callers"]) or "-"],
        ["Calls", ", ".join(node["callees"]) or "-"],
    ]
    return [html.H3(node["name"]), views.table(("Figure", "Value"), rows, "graph-node-table")]


# An edge's figures over all its URLs, above its URL table.
EDGE_TOTALS = ("request_rate", "error_rate", "request_bytes", "response_bytes")


def edge_details(edge: Mapping[str, Any]) -> list[Any]:
    figures = [f for f in TABLE_FIGURES if f.json != "source"]
    urls = [[url, *(f.unit.show(values.get(f.json)) for f in figures)] for url, values in edge["urls"].items()]
    codes = [[code, n] for code, n in sorted(edge["status_codes"].items())]
    title = f"{edge['caller']} -> {edge['callee']} ({edge.get('source') or '-'}, {edge.get('request_count')} requests)"
    totals = [[BY_JSON[name].label, BY_JSON[name].unit.show(edge.get(name)) or "-"] for name in EDGE_TOTALS]
    return [
        html.H3(title),
        views.table(("Figure", "Value"), totals, "graph-edge-figures"),
        views.table(("URL", *(f.header for f in figures)), urls, "graph-edge-urls"),
        views.table(("Status code", "Requests"), codes, "graph-edge-codes"),
    ]


def register(app: Dash, graph: GraphService) -> None:
    @app.callback(
        Output("mesh-graph", "elements"),
        Output("graph-updated", "children"),
        Input("tick", "n_intervals"),
        Input("tabs", "value"),
        Input("figures-source", "value"),
        Input("graph-period", "value"),
    )
    def refresh(_: Any, tab: str, source: str | None, period: str) -> tuple[Any, Any]:
        if tab != "graph":
            return no_update, no_update
        try:
            found = graph.graph(period == "window", source or None)
        except ApiError as exc:
            return no_update, failure(exc)
        return elements(found), f"{len(found['nodes'])} nodes, {len(found['edges'])} edges"

    @app.callback(
        Output("graph-details", "children"),
        Input("mesh-graph", "tapNodeData"),
        Input("mesh-graph", "tapEdgeData"),
        prevent_initial_call=True,
    )
    def details(node: Mapping[str, Any] | None, edge: Mapping[str, Any] | None) -> Any:
        if ctx.triggered_id != "mesh-graph":
            return no_update
        tapped = ctx.triggered[0]["prop_id"].rsplit(".", 1)[-1]
        if tapped == "tapEdgeData" and edge:
            return edge_details(edge["edge"])
        if tapped == "tapNodeData" and node:
            return node_details(node["node"])
        return no_update
