"""The graph through the analytics job (spark-submit.sh) on the real stack: spans the test seeds in
Cassandra become exact edges in Redis, incrementally (a parent stored after its child's bucket was
computed), per source and over the window."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from clover import keys, schema
from clover.config import Config
from stack.launcher import Launcher
from tests.integration.analytics_support import run_in_this_process
from tests.integration.visibility_seed import INBOUND, SeedSpan, seed

pytestmark = pytest.mark.spark


def call(trace: str, caller: str, callee: str, start_us: int, status: int = 200, url: str = "/",
         sizes: tuple[int, int] = (120, 2000)) -> list[SeedSpan]:  # fmt: skip
    """A request of ``caller`` whose client span calls ``callee`` (request and response ``sizes``,
    bytes): three spans (jaeger)."""
    return [
        SeedSpan(trace, "s", caller, "/in", "ua", caller, 200, 5000, INBOUND, "GET", start_us, request_size=7,
                 response_size=9),
        SeedSpan(trace, "c", caller, url, "ua", caller, status, 4000, None, "GET", start_us + 10, kind="client",
                 parent="s", request_size=sizes[0], response_size=sizes[1]),
        SeedSpan(trace, "x", callee, url, "ua", callee, status, 3000, INBOUND, "GET", start_us + 20, parent="c",
                 request_size=sizes[0], response_size=sizes[1]),
    ]  # fmt: skip


def exchange(n: int, service: str, src: str, dst: str, start_us: int, status: int = 200) -> SeedSpan:
    """An exchange Clovisor saw on ``service``'s veth (an inbound one: the pod answered): 80 bytes in, 615 out."""
    return SeedSpan(f"k{n}", "1", service, "/", "ua", service, status, 700, None, "GET /", start_us,
                    source="clovisor", src_ip=src, dst_ip=dst, request_size=80, response_size=615)  # fmt: skip


def edges(store: redis.Redis, window: bool = False, source: str | None = None) -> dict[str, Any]:
    found = store.hgetall(keys.graph(window, source))
    return {member: json.loads(value) for member, value in found.items()}  # type: ignore[union-attr]


def counts(found: dict[str, Any]) -> dict[str, tuple[str, dict[str, int]]]:
    return {member: (edge["request_count"], edge["status_codes"]) for member, edge in found.items()}


def sizes(found: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {member: (edge["request_bytes"], edge["response_bytes"]) for member, edge in found.items()}


def test_edges_are_exact_incremental_and_per_source(
    stack: Launcher, cfg: Config, cassandra: Any, store: redis.Redis
) -> None:
    schema.truncate(cassandra, schema.tables())
    store.flushdb()
    bucket_us = cfg.bucket_seconds * 1_000_000
    now_us = int(time.time() * 1_000_000)
    old = (now_us - 1200 * 1_000_000) // bucket_us * bucket_us  # outside the 5-minute window
    recent = (now_us - 120 * 1_000_000) // bucket_us * bucket_us
    spans = [s for i in range(4) for s in call(f"p{i}", "proxy", "lb", recent + i, 503 if i == 0 else 200,
                                               sizes=(100 + i, 1000 + i))]  # fmt: skip
    spans += [s for i in range(3) for s in call(f"q{i}", "lb", "server1", old + i, url="/s1")]
    # The caller's client span one bucket before its callee's server span.
    spans += call("cross", "proxy", "lb", recent - 15)
    # nginx has no tracer: Clovisor on its veth sees 10.9.0.9 (not traced) call it 2 times; lb
    # (10.9.0.2) answers proxy (10.9.0.1), whose own exchange gives its address.
    spans += [exchange(i, "nginx", "10.9.0.9", "10.9.0.3", recent + 50 + i, 404) for i in range(2)]
    spans += [exchange(5, "lb", "10.9.0.1", "10.9.0.2", recent + 60), exchange(6, "proxy", "10.9.0.8", "10.9.0.1",
                                                                              recent + 61)]  # fmt: skip
    # A callee's span stored before its caller's, which is one bucket earlier; and a caller's span
    # stored before its callee's, five buckets later (its bucket is not recomputed: the parent is
    # found in the bucket before, read for that). Each has only its first part in this run.
    late = call("late", "proxy", "lb", recent + bucket_us - 15)
    later = call("later", "proxy", "lb", recent + 6 * bucket_us - 15, status=500)
    seed(cassandra, [*spans, late[2], *later[:2]], cfg.bucket_seconds)
    run_in_this_process(cfg)
    assert counts(edges(store, source="jaeger")) == {
        "proxy -> lb": ("5", {"200": 4, "503": 1}),
        "lb -> server1": ("3", {"200": 3}),
    }
    assert counts(edges(store, source="clovisor")) == {
        "10.9.0.9 -> nginx": ("2", {"404": 2}),
        "proxy -> lb": ("1", {"200": 1}),
        "10.9.0.8 -> proxy": ("1", {"200": 1}),
    }
    headline = edges(store)
    assert counts(headline) == {
        "proxy -> lb": ("5", {"200": 4, "503": 1}),
        "lb -> server1": ("3", {"200": 3}),
        "10.9.0.9 -> nginx": ("2", {"404": 2}),
        "10.9.0.8 -> proxy": ("1", {"200": 1}),
    }
    assert (headline["proxy -> lb"]["source"], headline["proxy -> lb"]["errors_5xx"]) == ("jaeger", "1")
    # Bytes: proxy -> lb 100..103 + 120 in, 1000..1003 + 2000 out; lb -> server1 3 x (120, 2000); nginx 2 x (80, 615).
    assert sizes(headline) == {
        "proxy -> lb": ("526", "6006"),
        "lb -> server1": ("360", "6000"),
        "10.9.0.9 -> nginx": ("160", "1230"),
        "10.9.0.8 -> proxy": ("80", "615"),
    }
    assert set(headline["lb -> server1"]["urls"]) == {"/s1"}
    assert "lb -> server1" not in edges(store, window=True)  # its requests are 20 minutes old
    assert counts(edges(store, window=True, source="jaeger")) == {"proxy -> lb": ("5", {"200": 4, "503": 1})}

    seed(cassandra, [*late[:2], later[2]], cfg.bucket_seconds)
    run_in_this_process(cfg)
    assert counts(edges(store, source="jaeger"))["proxy -> lb"] == ("7", {"200": 5, "500": 1, "503": 1})
    assert sizes(edges(store, source="jaeger"))["proxy -> lb"] == ("766", "10006")
