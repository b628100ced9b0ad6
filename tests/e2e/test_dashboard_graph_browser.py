"""The dashboard's Graph tab in headless Chromium, served by the controller running as a part of
the test stack: the graph the test publishes to Redis (as the analytics would: jobs/graph.py) is
drawn, a click on an edge shows its URLs and status codes, a click on a node its figures, and the
source selector redraws it. A screenshot is saved as ``artifacts/dashboard-graph.png``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from clover.config import Config
from stack.launcher import Launcher
from tests.e2e.browser import cells, checkbox, click_option, log_in, open_page, open_tab, screenshot, text
from tests.graph_sample import publish_sample_graph
from tests.integration.controller_parts import flush_visibility, running
from tests.waiting import wait_until

pytestmark = pytest.mark.browser

# The page's Cytoscape instance: cytoscape registers it on its container.
CY = "const cy = [...document.querySelectorAll('#mesh-graph, #mesh-graph div')].find(e => e._cyreg)?._cyreg.cy;"


@pytest.fixture(scope="module")
def parts(stack: Launcher) -> Iterator[Launcher]:
    with running(stack, ["controller"]) as launcher:
        yield launcher


@pytest.fixture(scope="module")
def store(flushed_store: redis.Redis) -> redis.Redis:
    return flushed_store


def drawn(driver: WebDriver) -> dict[str, Any]:
    """The nodes (with their size and colour) and edges (with their label) Cytoscape holds."""
    found = driver.execute_script(
        CY + "return cy ? {nodes: cy.nodes().map(n => [n.id(), n.data('size'), n.data('colour')]),"
        " edges: cy.edges().map(e => [e.id(), e.data('label')])} : null;"
    )
    return found if isinstance(found, dict) else {"nodes": [], "edges": []}


def click_element(driver: WebDriver, element_id: str) -> None:
    """Click where Cytoscape draws a node (its centre) or an edge (its midpoint), as a person does."""
    x, y = driver.execute_script(
        CY + "const e = cy.getElementById(arguments[0]); const p = e.isNode() ? e.renderedPosition() :"
        " e.renderedMidpoint(); return [p.x, p.y];",
        element_id,
    )
    canvas = driver.find_element(By.CSS_SELECTOR, "#mesh-graph canvas:last-of-type")
    size = canvas.size
    ActionChains(driver).move_to_element_with_offset(
        canvas, int(x - size["width"] / 2), int(y - size["height"] / 2)
    ).click().perform()


def test_the_graph_tab_draws_the_edges_and_a_click_shows_an_edges_urls_and_a_nodes_figures(
    browser: WebDriver, store: redis.Redis, cfg: Config
) -> None:
    flush_visibility(store)
    publish_sample_graph(store)
    open_page(browser, cfg.controller_url + "/dashboard/", lambda: text(browser, "tabs"), "the dashboard's tabs")
    log_in(browser, cfg)
    open_tab(browser, "Graph")
    wait_until(lambda: len(drawn(browser)["edges"]) == 3, 30, what="the graph's three edges")
    graph = drawn(browser)
    assert sorted(graph["nodes"]) == [
        ["10.0.0.9", 30, "#9e9e9e"],  # a caller only
        ["clover-server1", 90, "#2e7d32"],  # the busiest, no errors
        ["http-lb", 56, "#c62828"],  # 25% errors
        ["nginx", 43, "#c62828"],  # 0.22 req/s, all errors
        ["proxy-access-control", 30, "#9e9e9e"],
    ]
    labels = dict(graph["edges"])
    assert labels["proxy-access-control -> http-lb"].startswith("0.44 req/s · p99 ")
    assert labels["http-lb -> clover-server1"].startswith("1.00 req/s · p99 ")
    assert text(browser, "graph-updated") == "5 nodes, 3 edges"
    screenshot(browser, "dashboard-graph")

    click_element(browser, "proxy-access-control -> http-lb")
    wait_until(lambda: cells(browser, "graph-edge-codes"), 20, what="the edge's status codes")
    assert cells(browser, "graph-edge-codes") == [["200", "3"], ["503", "1"]]
    assert [row[:2] for row in cells(browser, "graph-edge-urls")] == [["/a", "3"], ["/b", "1"]]
    assert cells(browser, "graph-edge-figures") == [
        ["Req/s", "0.44"], ["Error rate", "25.00%"], ["Request bytes", "400"], ["Response bytes", "8000"],
    ]  # fmt: skip

    click_element(browser, "http-lb")
    wait_until(lambda: cells(browser, "graph-node-table"), 20, what="the node's figures")
    assert cells(browser, "graph-node-table") == [
        ["Requests answered", "4"], ["Request rate (req/s)", "0.44"], ["Errors", "1"], ["Error rate", "25.00%"],
        ["Called by", "proxy-access-control"], ["Calls", "clover-server1"],
    ]  # fmt: skip

    # One source selector in the top bar: the Graph tab follows it, and so does the Visibility tab.
    click_option(browser, "figures-source", "clovisor")
    wait_until(lambda: [e[0] for e in drawn(browser)["edges"]] == ["10.0.0.9 -> nginx"], 30, what="Clovisor's edge")
    assert browser.find_elements(By.CSS_SELECTOR, ".topbar #figures-source")
    open_tab(browser, "Visibility")
    assert checkbox(browser, "figures-source", "clovisor").is_selected()
