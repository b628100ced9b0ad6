"""A graph as the analytics publish it (jobs/graph.py), for the tests of what reads it: the REST
route, cloverctl and the dashboard."""

from __future__ import annotations

from dataclasses import replace

import redis

from clover import keys
from jobs import kinds
from jobs.graph import graph_hashes
from jobs.publish import Window
from tests.unit.test_figures import requests

NOW_US = 1_700_000_000_000_000
FIRST_US = NOW_US - 100_000_000
PROXY, LB = "proxy-access-control", "http-lb"


def sample_graph_hashes() -> dict[str, dict[str, str]]:
    """proxy-access-control -> http-lb (4 requests, one 503, two URLs; 400 bytes sent, 8000 back),
    http-lb -> clover-server1 (9), and nginx called by an address only Clovisor saw (2, both 404)."""
    totals = {
        kinds.EDGE.key(PROXY, LB, "jaeger"): replace(
            requests([1000, 2000, 3000, 4000], errors=1, first_us=FIRST_US), request_bytes=400, response_bytes=8000
        ),
        kinds.EDGE_URL.key(PROXY, LB, "jaeger", "/a"): requests([1000, 2000, 3000], first_us=FIRST_US),
        kinds.EDGE_URL.key(PROXY, LB, "jaeger", "/b"): requests([4000], errors=1, first_us=FIRST_US),
        kinds.EDGE_STATUS.key(PROXY, LB, "jaeger", "200"): requests([1000, 2000, 3000]),
        kinds.EDGE_STATUS.key(PROXY, LB, "jaeger", "503"): requests([4000], errors=1),
        kinds.EDGE.key(LB, "clover-server1", "jaeger"): requests([500] * 9, first_us=FIRST_US),
        kinds.EDGE.key("10.0.0.9", "nginx", "clovisor"): requests([700] * 2, errors=2, n4xx=2, first_us=FIRST_US),
    }
    return graph_hashes(totals, {}, Window(NOW_US - 300_000_000, NOW_US))


def publish_sample_graph(store: redis.Redis) -> None:
    """The sample graph in Redis, as a publication leaves it."""
    hashes = sample_graph_hashes()
    for key, mapping in hashes.items():
        store.hset(key, mapping=mapping)
    store.sadd(keys.PUBLISHED_KEYS, *hashes)
