"""The graph's publication (jobs/graph.py): edges from the edge aggregates, per source and headline."""

from __future__ import annotations

import json

from clover import keys
from jobs import kinds
from jobs.graph import graph_hashes, with_next_buckets
from jobs.publish import Window
from tests.unit.test_figures import requests

NOW_US = 1_700_000_000_000_000


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
    assert with_next_buckets([], 10_000, 30_000) == []


def test_a_graph_field_names_the_caller_and_the_callee() -> None:
    assert keys.graph_edge_of_field(keys.graph_edge_field("proxy-access-control", "http-lb")) == (
        "proxy-access-control",
        "http-lb",
    )
