"""Dashboard and stats API under a big result set: 50 services and 1,000 URLs in Redis.

    .venv/bin/python -m bench.dashboard.run [--services 50] [--urls 1000] [--rounds 60]

Runs on the benchmark stack (ports +20000, state in .clover-bench/): its Redis (database 9,
flushed and seeded by ``bench.dashboard.seed``) and the controller as the local stack runs it
(one waitress process). In the same run it times, round-robin so that the machine's other load
falls on all of them alike:

* ``GET /visibility/get/stats/all`` (the original's shape: each count list capped at 51) and
  ``?limit=0`` (whole lists: what the dashboard reads);
* a full dashboard refresh: the POST to ``/dashboard/_dash-update-component`` that the 5 s timer
  sends, building every figure, table and list of the Visibility view;
* the baselines: one bare Redis pipeline fetching the same keys (redis-py, in this process),
  with each count list capped at 51 (the route's default) and whole (``limit=0``, the refresh).

Prints p50, p95 and mean per measurement, the reply sizes, and each one's p95 over its
baseline's. Target: p95 under 200 ms for the route and the refresh.
"""

from __future__ import annotations

import os

os.environ.setdefault("CLOVER_REDIS_URL", "redis://127.0.0.1:26379/9")
os.environ.setdefault("CLOVER_CONTROLLER_URL", "http://127.0.0.1:28000")

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis
import requests

from bench import stack_env  # noqa: F401  (the benchmark stack's ports, before the configuration is read)
from bench.dashboard.seed import Shape, seed
from clover import keys
from stack.catalogue import local_stack
from stack.secrets import local_config

TARGET_MS = 200.0


def refresh_request(base: str) -> dict[str, Any]:
    """The body the browser POSTs when the 5 s timer fires (read from the app's dependencies)."""
    deps = requests.get(f"{base}/dashboard/_dash-dependencies", timeout=10).json()
    callback = next(c for c in deps if "count" in c["output"] and "metric-plots.children" in c["output"])
    outputs = [{"id": o.split(".")[0], "property": o.split(".")[1]} for o in callback["output"].strip(".").split("...")]
    values = {"tick.n_intervals": 1, "top-n.value": 20, "clear-done.data": None, "tabs.value": "visibility"}
    inputs = [{"id": i["id"], "property": i["property"], "value": values[f"{i['id']}.{i['property']}"]}
              for i in callback["inputs"]]  # fmt: skip
    return {"output": callback["output"], "outputs": outputs, "inputs": inputs, "changedPropIds": ["tick.n_intervals"],
            "state": []}  # fmt: skip


def baseline(store: redis.Redis, limit: int | None) -> Callable[[], int]:
    """One pipeline for every key the full stats read touches (what the controller reads in two);
    with ``limit``, the highest ``limit`` members of each count list, as the route's default."""
    services, prefixes, suffixes = (
        sorted(m.decode() if isinstance(m, bytes) else m for m in store.smembers(key))
        for key in (keys.VISIBILITY_SERVICES, keys.METRIC_PREFIXES, keys.METRIC_SUFFIXES)
    )

    def fetch() -> int:
        with store.pipeline(transaction=False) as pipe:
            for key in (keys.VISIBILITY_SERVICES, keys.METRIC_PREFIXES, keys.METRIC_SUFFIXES, keys.CUSTOM_METRICS,
                        keys.TRACING_SERVICES, *keys.SPAN_SETS):  # fmt: skip
                pipe.smembers(key)
            pipe.mget(*keys.SYSTEM_COUNTS)
            for key in keys.SPAN_ZSETS:
                if limit is None:
                    pipe.zrange(key, 0, -1, withscores=True)
                else:
                    pipe.zrevrange(key, 0, limit - 1, withscores=True)
            for s in services:
                pipe.hgetall(keys.service_stats(s))
                pipe.hgetall(keys.service_window(s))
            names = [(p, s, x) for s in services for p in prefixes for x in suffixes]
            for p, s, x in names:
                pipe.lrange(keys.metric_history(p, s, x), 0, keys.METRICS_HISTORY_LENGTH)
            pipe.mget([keys.metric_value(p, s, x) for p, s, x in names])
            return len(pipe.execute())

    return fetch


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description="dashboard and stats API timings beside a bare Redis pipeline")
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--urls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=60, help="timed rounds (after 5 warm-up rounds)")
    args = parser.parse_args()
    cfg = local_config()
    launcher = local_stack(cfg)
    before = {p.name for p in launcher.running()}
    launcher.up(["redis", "controller"], progress=lambda m: print(f"[stack] {m}"))
    started = [p.name for p in launcher.running() if p.name not in before and p.name in ("redis", "controller")]
    store = redis.Redis.from_url(cfg.redis_url, decode_responses=True)
    try:
        shape = seed(store, Shape(args.services, args.urls))
        print(f"seeded {cfg.redis_address}: {shape}")
        base = cfg.controller_url
        session = requests.Session()
        body = refresh_request(base)
        sizes: dict[str, int] = {}

        def get(path: str, name: str) -> Callable[[], None]:
            def call() -> None:
                reply = session.get(base + path, timeout=30)
                reply.raise_for_status()
                sizes[name] = len(reply.content)

            return call

        def refresh() -> None:
            reply = session.post(f"{base}/dashboard/_dash-update-component", json=body, timeout=30)
            reply.raise_for_status()
            sizes["dashboard refresh (POST _dash-update-component)"] = len(reply.content)

        whole, capped = "baseline: bare Redis pipeline, whole lists", "baseline: bare Redis pipeline, 51 per list"
        measures: dict[str, tuple[Callable[[], Any], str]] = {
            capped: (baseline(store, 51), capped),
            whole: (baseline(store, None), whole),
            "GET /visibility/get/stats/all": (
                get("/visibility/get/stats/all", "GET /visibility/get/stats/all"),
                capped,
            ),
            "GET /visibility/get/stats/all?limit=0": (
                get("/visibility/get/stats/all?limit=0", "GET /visibility/get/stats/all?limit=0"),
                whole,
            ),
            "dashboard refresh (POST _dash-update-component)": (refresh, whole),
        }
        times: dict[str, list[float]] = {name: [] for name in measures}
        for _ in range(5):
            for fn, _ in measures.values():
                fn()
        for _ in range(args.rounds):
            for name, (fn, _) in measures.items():
                times[name].append(timed(fn))
        load = os.getloadavg()[0]
        print(f"\n{args.services} services, {args.urls} URLs, {args.rounds} rounds; load average {load:.1f}\n")
        print(f"{'measurement':<50} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} {'reply':>10} {'p95/base':>9}")
        for name, values in times.items():
            size = f"{sizes[name] / 1024:.0f} KiB" if name in sizes else "-"
            ratio = quantile(values, 0.95) / quantile(times[measures[name][1]], 0.95)
            print(f"{name:<50} {quantile(values, 0.5):>8.1f} {quantile(values, 0.95):>8.1f} "
                  f"{statistics.mean(values):>8.1f} {size:>10} {ratio:>8.1f}x")  # fmt: skip
        worst = max(quantile(times[n], 0.95) for n in measures if not n.startswith("baseline"))
        verdict = "met" if worst < TARGET_MS else "NOT met"
        print(f"\ntarget p95 < {TARGET_MS:.0f} ms: {verdict} (worst p95 {worst:.1f} ms)")
    finally:
        store.flushdb()
        store.close()
        if started:
            launcher.down(started)


if __name__ == "__main__":
    main()
