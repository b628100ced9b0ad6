"""The graph through the controller running as a part of the test stack: GET /visibility/get/graph
and ``cloverctl get graph`` (table, -o json, --dot) over a graph published to the stack's Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from click.testing import CliRunner

from clover.config import Config
from cloverctl.main import cli
from stack.launcher import Launcher
from tests import controller_client
from tests.graph_sample import PROXY, publish_sample_graph
from tests.integration.controller_parts import flush_visibility, running


@pytest.fixture(scope="module")
def store(stack: Launcher, cfg: Config) -> Iterator[redis.Redis]:
    with running(stack, ["controller"]):
        client = redis.Redis.from_url(cfg.redis_url, decode_responses=True)
        flush_visibility(client)
        publish_sample_graph(client)
        yield client
        flush_visibility(client)
        client.close()


def cloverctl(*args: str) -> str:
    result = CliRunner().invoke(cli, ["get", "graph", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_route_serves_the_graph_per_source_and_window(store: redis.Redis, cfg: Config) -> None:
    url = cfg.controller_url + "/visibility/get/graph"
    whole = controller_client.get(url, timeout=30).json()
    assert (whole["window"], whole["source"], len(whole["nodes"])) == (False, None, 5)
    assert {(e["caller"], e["callee"], e["request_count"], e["source"]) for e in whole["edges"]} == {
        (PROXY, "http-lb", "4", "jaeger"), ("http-lb", "clover-server1", "9", "jaeger"),
        ("10.0.0.9", "nginx", "2", "clovisor"),
    }  # fmt: skip
    network = controller_client.get(url, params={"source": "clovisor"}, timeout=30).json()
    assert [(e["caller"], e["callee"]) for e in network["edges"]] == [("10.0.0.9", "nginx")]
    assert controller_client.get(url, params={"window": "1"}, timeout=30).json()["edges"] == []
    bad = controller_client.get(url, params={"source": "kiali"}, timeout=30)
    assert (bad.status_code, bad.json()["field"]) == (400, "source")


def test_cloverctl_get_graph_prints_a_table_json_and_dot(store: redis.Redis) -> None:
    table = cloverctl().splitlines()
    assert table[0] == "Edges (whole retention; 5 nodes, 3 edges):"
    assert [line.split()[:3] for line in table[2:]] == [
        ["http-lb", "clover-server1", "9"], [PROXY, "http-lb", "4"], ["10.0.0.9", "nginx", "2"],
    ]  # fmt: skip
    as_json = json.loads(cloverctl("--source", "jaeger", "-o", "json"))
    assert sorted(e["callee"] for e in as_json["edges"]) == ["clover-server1", "http-lb"]
    dot = cloverctl("--dot").splitlines()
    assert (dot[0], dot[-1]) == ("digraph clover {", "}")
    assert sum(" -> " in line for line in dot) == 3
