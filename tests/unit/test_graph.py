"""The graph's publication (jobs/graph.py): edges from the edge aggregates, per source and headline."""

from __future__ import annotations

import json
from pathlib import Path

from clover import keys
from cloverctl.graph import format_dot, format_graph
from controller.api import services_of
from controller.app import create_app
from controller.services.graph import graph_of
from dashboard.callbacks.graph import elements
from jobs import kinds
from jobs.aggregates import bin_of, bin_value
from jobs.graph import earlier_buckets, graph_hashes, with_next_buckets
from jobs.publish import Window
from jobs.visibility import steps_of
from tests.graph_sample import PROXY, sample_graph_hashes
from tests.unit.offline_controller import offline_config
from tests.unit.test_figures import requests

NOW_US = 1_700_000_000_000_000


def sketched_ms(duration_us: int) -> str:
    """A duration as a percentile read from the sketch publishes it (its bin's value)."""
    return f"{bin_value(bin_of(duration_us)) / 1000:.2f}"


def test_each_edge_is_published_from_the_source_that_saw_most_and_from_each_source() -> None:
    first = NOW_US - 100_000_000
    totals = {
        kinds.EDGE.key("proxy", "lb", "jaeger"): requests([1000, 2000, 3000, 4000], errors=1, first_us=first),
        kinds.EDGE_URL.key("proxy", "lb", "jaeger", "/a"): requests([1000, 2000, 3000], first_us=first),
        kinds.EDGE_URL.key("proxy", "lb", "jaeger", "/b"): requests([4000], errors=1, first_us=first),
        kinds.EDGE_STATUS.key("proxy", "lb", "jaeger", "200"): requests([1000, 2000, 3000]),
        kinds.EDGE_STATUS.key("proxy", "lb", "jaeger", "503"): requests([4000], errors=1),
        kinds.EDGE.key("proxy", "lb", "clovisor"): requests([1500] * 2, first_us=first),
        kinds.EDGE.key("10.0.0.9", "nginx", "clovisor"): requests([500] * 5, first_us=first),
        kinds.REQUESTS.key("lb", "jaeger"): requests([1000] * 9),  # not an edge
    }
    window = {kinds.EDGE.key("proxy", "lb", "jaeger"): requests([3000, 4000], errors=1, first_us=first)}
    hashes = graph_hashes(totals, window, Window(NOW_US - 300_000_000, NOW_US))
    assert set(hashes) == {
        "visibility_graph", "visibility_graph:source:jaeger", "visibility_graph:source:clovisor",
        "visibility_graph:window", "visibility_graph:window:source:jaeger",
    }  # fmt: skip
    edges = {key: {member: json.loads(value) for member, value in found.items()} for key, found in hashes.items()}
    headline = edges[keys.graph()]
    assert set(headline) == {"proxy -> lb", "10.0.0.9 -> nginx"}
    assert headline["proxy -> lb"] == edges[keys.graph(source="jaeger")]["proxy -> lb"]
    lb = headline["proxy -> lb"]
    assert {k: lb[k] for k in ("request_count", "errors", "min_rt", "max_rt", "avg_rt", "source", "request_rate")} == {
        "request_count": "4", "errors": "1", "min_rt": "1.00", "max_rt": "4.00", "avg_rt": "2.50", "source": "jaeger",
        "request_rate": "0.44",  # 4 requests over first..last (9 s)
    }  # fmt: skip
    assert {url: (f["request_count"], f["errors"]) for url, f in lb["urls"].items()} == {"/a": ("3", "0"),
                                                                                       "/b": ("1", "1")}  # fmt: skip
    assert lb["status_codes"] == {"200": 3, "503": 1}
    assert edges[keys.graph(source="clovisor")]["proxy -> lb"]["request_count"] == "2"
    assert headline["10.0.0.9 -> nginx"]["source"] == "clovisor"
    recent = edges[keys.graph(window=True)]
    assert set(recent) == {"proxy -> lb"}
    # The window's rate counts from the first request ever seen (100 s ago), not the window's start.
    assert (recent["proxy -> lb"]["request_count"], recent["proxy -> lb"]["request_rate"]) == ("2", "0.02")


def test_no_edges_publish_no_graph() -> None:
    assert graph_hashes({kinds.REQUESTS.key("lb", "jaeger"): requests([1])}, {}, Window(0, 1)) == {}


def test_each_changed_bucket_brings_the_next_one_up_to_the_last() -> None:
    assert with_next_buckets([0, 10_000, 30_000], 10_000, 30_000) == [0, 10_000, 20_000, 30_000]


def test_the_parents_of_a_read_are_also_in_the_bucket_before_each_run_of_buckets() -> None:
    assert earlier_buckets([10_000, 20_000, 50_000], 10_000) == [0, 40_000]


def test_a_short_tail_of_buckets_joins_the_step_before() -> None:
    assert steps_of(list(range(101)), 50) == [list(range(50)), list(range(50, 101))]
    assert steps_of(list(range(105)), 50) == [list(range(50)), list(range(50, 100)), list(range(100, 105))]
    assert steps_of([7], 50) == [[7]]
    assert steps_of([], 50) == []
    assert with_next_buckets([], 10_000, 30_000) == []


def test_a_graph_field_names_the_caller_and_the_callee() -> None:
    assert keys.graph_edge_of_field(keys.graph_edge_field("proxy-access-control", "http-lb")) == (
        "proxy-access-control",
        "http-lb",
    )


def published_graph() -> dict[str, str]:
    return sample_graph_hashes()[keys.graph()]


def test_the_controller_reads_nodes_and_edges_from_the_published_graph() -> None:
    graph = graph_of(published_graph())
    assert graph["nodes"] == [
        {"name": "10.0.0.9", "request_count": 0, "errors": 0, "error_rate": None, "request_rate": 0.0,
         "callers": [], "callees": ["nginx"]},
        {"name": "clover-server1", "request_count": 9, "errors": 0, "error_rate": 0.0, "request_rate": 1.0,
         "callers": ["http-lb"], "callees": []},
        {"name": "http-lb", "request_count": 4, "errors": 1, "error_rate": 0.25, "request_rate": 0.44,
         "callers": ["proxy-access-control"], "callees": ["clover-server1"]},
        {"name": "nginx", "request_count": 2, "errors": 2, "error_rate": 1.0, "request_rate": 0.22,
         "callers": ["10.0.0.9"], "callees": []},
        {"name": "proxy-access-control", "request_count": 0, "errors": 0, "error_rate": None, "request_rate": 0.0,
         "callers": [], "callees": ["http-lb"]},
    ]  # fmt: skip
    lb = next(e for e in graph["edges"] if e["callee"] == "http-lb")
    assert (lb["caller"], lb["request_count"], lb["p99"], lb["source"]) == (PROXY, "4", sketched_ms(3000), "jaeger")
    assert (lb["request_bytes"], lb["response_bytes"]) == ("400", "8000")
    assert {url: f["request_count"] for url, f in lb["urls"].items()} == {"/a": "3", "/b": "1"}
    assert lb["status_codes"] == {"200": 3, "503": 1}


def test_cloverctl_prints_the_edges_busiest_first_and_as_dot() -> None:
    graph = graph_of(published_graph())
    lines = format_graph({"window": False, **graph}).splitlines()
    assert lines[0] == "Edges (whole retention; 5 nodes, 3 edges):"
    assert lines[1].split() == ["CALLER", "CALLEE", "REQUESTS", "REQ/S", "4XX", "5XX", "ERROR", "RATE", "P50", "(MS)",
                                "P90", "(MS)", "P99", "(MS)", "REQUEST", "BYTES", "RESPONSE", "BYTES", "SOURCE",
                                "STATUS", "CODES"]  # fmt: skip
    assert lines[2].split()[:3] == ["http-lb", "clover-server1", "9"]
    assert lines[3].split() == [PROXY, "http-lb", "4", "0.44", "0", "0", "25.00%", sketched_ms(2000),
                                sketched_ms(3000), sketched_ms(3000), "400", "8000", "jaeger", "200:3",
                                "503:1"]  # fmt: skip
    assert lines[4].split()[:7] == ["10.0.0.9", "nginx", "2", "0.22", "2", "0", "100.00%"]
    assert format_graph({"window": True, "nodes": [], "edges": []}).startswith("No edges (the last 5 minutes)")
    dot = format_dot(graph)
    assert dot.splitlines()[0] == "digraph clover {"
    assert f'  "{PROXY}" -> "http-lb" [label="0.44 req/s, p99 {sketched_ms(3000)} ms"];' in dot.splitlines()
    assert format_dot({"nodes": [{"name": 'a"b', "request_count": 0}], "edges": []}).splitlines()[3] == (
        '  "a\\"b" [tooltip="0 requests"];'
    )


def test_the_dashboard_sizes_nodes_by_rate_colours_them_by_errors_and_labels_edges() -> None:
    found = {e["data"]["id"]: e["data"] for e in elements(graph_of(published_graph()))}
    assert {n: (found[n]["size"], found[n]["colour"]) for n in (PROXY, "http-lb", "clover-server1", "nginx")} == {
        PROXY: (30, "#9e9e9e"), "http-lb": (56, "#c62828"), "clover-server1": (90, "#2e7d32"),
        "nginx": (43, "#c62828"),
    }  # fmt: skip
    edge = found[f"{PROXY} -> http-lb"]
    assert (edge["source"], edge["target"], edge["label"]) == (
        PROXY,
        "http-lb",
        f"0.44 req/s · p99 {sketched_ms(3000)} ms",
    )


def test_the_graph_route_is_described_and_names_a_bad_source(tmp_path: Path) -> None:
    app = create_app(offline_config(tmp_path), dashboard=False)
    try:
        client = app.test_client()
        reply = client.get("/visibility/get/graph?source=nope")
        assert reply.status_code == 400
        assert reply.json is not None and reply.json["field"] == "source"
        assert client.get("/visibility/get/graph?window=maybe").json["field"] == "window"  # type: ignore[index]
        doc = client.get("/openapi.json").json
        assert doc is not None
        route = doc["paths"]["/visibility/get/graph"]["get"]
        assert [p["name"] for p in route["parameters"]] == ["window", "source"]
        assert doc["components"]["schemas"]["Graph"]["properties"]["edges"]["type"] == "array"
    finally:
        services_of(app).close()
