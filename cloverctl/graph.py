"""``cloverctl get graph``: the mesh as a graph, through the controller (GET /visibility/get/graph):
a table of caller -> callee edges, the JSON (-o json), or Graphviz's dot (--dot)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click

from clover.figures import BY_JSON
from cloverctl import rest
from cloverctl.rest import output_option
from cloverctl.visibility import columns, source_option

EDGE_FIGURES = (
    "request_count", "request_rate", "errors_4xx", "errors_5xx", "error_rate", "p50", "p90", "p99", "request_bytes",
    "response_bytes",
)  # fmt: skip


def format_graph(graph: Mapping[str, Any]) -> str:
    """The edges for people, busiest first, with each edge's status codes."""
    scope = "the last 5 minutes" if graph.get("window") else "whole retention"
    edges = sorted(graph["edges"], key=lambda e: (-int(e.get("request_count") or 0), e["caller"], e["callee"]))
    if not edges:
        return f"No edges ({scope}): the analytics have not seen a caller -> callee request yet."
    rows = [
        [e["caller"], e["callee"], *(BY_JSON[f].unit.show(e.get(f)) for f in EDGE_FIGURES), e.get("source"),
         " ".join(f"{code}:{n}" for code, n in sorted(e["status_codes"].items()))]
        for e in edges
    ]  # fmt: skip
    head = ("CALLER", "CALLEE", *(BY_JSON[f].header.upper() for f in EDGE_FIGURES), "SOURCE", "STATUS CODES")
    return f"Edges ({scope}; {len(graph['nodes'])} nodes, {len(edges)} edges):\n" + columns(head, rows)


def _quoted(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid dot ID: quotes and backslashes escaped


def format_dot(graph: Mapping[str, Any]) -> str:
    """The graph in Graphviz's dot: an edge labelled with its request rate and p99."""
    lines = ["digraph clover {", "  rankdir=LR;", "  node [shape=box];"]
    for node in graph["nodes"]:
        lines.append(f"  {_quoted(node['name'])} [tooltip={_quoted(str(node['request_count']) + ' requests')}];")
    for e in graph["edges"]:
        label = f"{e.get('request_rate') or 'NA'} req/s, p99 {e.get('p99') or 'NA'} ms"
        lines.append(f"  {_quoted(e['caller'])} -> {_quoted(e['callee'])} [label={_quoted(label)}];")
    lines.append("}")
    return "\n".join(lines)


@click.command("graph", epilog=rest.EXIT_CODES_HELP)
@click.option("--window", is_flag=True, help="The last 5 minutes' edges instead of the whole retention.")
@click.option("--dot", is_flag=True, help="Print the graph in Graphviz's dot (e.g. | dot -Tsvg > mesh.svg).")
@source_option
@output_option
def get_graph(window: bool, dot: bool, source: str | None) -> None:
    """Show who calls whom: each caller -> callee edge with its requests, rate, errors and latency
    (GET /visibility/get/graph)."""
    params: dict[str, Any] = {**({"window": "1"} if window else {}), **({"source": source} if source else {})}
    graph = rest.data("GET", "/visibility/get/graph", params=params)
    if dot:
        click.echo(format_dot(graph))
    elif rest.json_output():
        rest.echo_json(graph)
    else:
        click.echo(format_graph(graph))


def register(verbs: dict[str, click.Group]) -> None:
    verbs["get"].add_command(get_graph)
