"""Deterministic synthetic visibility results in Redis, in the analytics' key formats: what the
dashboard benchmark measures against (50 services, 1,000 URLs by default).

    .venv/bin/python -m bench.dashboard.seed --redis redis://127.0.0.1:6379/9 [--services 50 --urls 1000]
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass

import redis
from redis.typing import EncodableT, FieldT

from clover import keys
from clover.figures import BY_JSON

PREFIXES = ("envoy_cluster_outbound_9180__", "envoy_cluster_inbound_9180__")
SUFFIXES = ("_default_svc_cluster_local_upstream_rq_2xx", "_default_svc_cluster_local_upstream_cx_active")
AGENTS = ("chrome", "safari", "firefox", "curl/8.5.0", "Apache-HttpClient/4.5.14 (Java/17)", "python-requests/2.32",
          "Go-http-client/1.1", "okhttp/4.12", "Wget/1.21", "asafaweb.com")  # fmt: skip
STATUS = (("200", 0.9), ("404", 0.04), ("500", 0.03), ("503", 0.03))


@dataclass(frozen=True)
class Shape:
    services: int = 50
    urls: int = 1000
    history: int = 100
    alerts: int = 50


def service_names(n: int) -> list[str]:
    """``proxy-access-control``, ``http-lb``, then ``svc-003`` ... (hyphen form)."""
    base = ["proxy-access-control", "http-lb", *(f"clover-server{i}" for i in range(1, 6))]
    return (base + [f"svc-{i:03d}" for i in range(len(base), n)])[:n]


def figures(rng: random.Random, count: int) -> dict[FieldT, EncodableT]:
    p50 = rng.uniform(1, 20)
    errors4, errors5 = rng.randint(0, count // 20), rng.randint(0, count // 30)
    by_json = {
        "min": f"{p50 / 4:.2f}",
        "avg": f"{p50 * 1.3:.2f}",
        "max": f"{p50 * 12:.2f}",
        "p50": f"{p50:.2f}",
        "p90": f"{p50 * 2.5:.2f}",
        "p99": f"{p50 * 6:.2f}",
        "p999": f"{p50 * 10:.2f}",
        "request_count": str(count),
        "errors": str(errors4 + errors5),
        "errors_4xx": str(errors4),
        "errors_5xx": str(errors5),
        "error_rate": f"{(errors4 + errors5) / count:.4f}",
        "error_rate_4xx": f"{errors4 / count:.4f}",
        "error_rate_5xx": f"{errors5 / count:.4f}",
        "request_rate": f"{count / 600:.2f}",
        "source": "jaeger",
    }
    return {BY_JSON[name].field: value for name, value in by_json.items()}


def seed(store: redis.Redis, shape: Shape = Shape(), rng_seed: int = 8) -> dict[str, int]:
    """Replace the visibility keys with synthetic results; returns what was written."""
    rng = random.Random(rng_seed)
    services = service_names(shape.services)
    urls = [f"http://{services[i % len(services)]}:9180/api/v1/items/{i:04d}" for i in range(shape.urls)]
    store.flushdb()
    pipe = store.pipeline(transaction=False)
    pipe.sadd(keys.VISIBILITY_SERVICES, *(keys.underscore(s) for s in services))
    pipe.sadd(keys.TRACING_SERVICES, *services)
    pipe.sadd(keys.METRIC_PREFIXES, *PREFIXES)
    pipe.sadd(keys.METRIC_SUFFIXES, *SUFFIXES)
    spans = 0
    url_counts: dict[str, float] = {}
    status_counts: dict[str, float] = {}
    node_url: dict[str, float] = {}
    for i, url in enumerate(urls):
        n = rng.randint(1, 400)
        url_counts[url] = n
        spans += n
        for code, share in STATUS:
            k = round(n * share)
            if k:
                status_counts[keys.status_url_member(code, url)] = k
        node_url[keys.node_url_member(f"{services[i % len(services)]}-7d9f8b-{i % 3}.default", url)] = n
    nodes = {f"{s}-7d9f8b-{j}.default": float(rng.randint(100, 5000)) for s in services for j in range(3)}
    agents = {a: float(rng.randint(10, 9000)) for a in AGENTS}
    for service in services:
        count = rng.randint(200, 20000)
        pipe.hset(keys.service_stats(service), mapping=figures(rng, count))
        pipe.hset(keys.service_window(service), mapping=figures(rng, max(20, count // 10)))
        own = [u for u in urls if f"//{service}:" in u][:40]
        if own:
            pipe.hset(keys.url_stats(service), mapping={u: json.dumps(figures(rng, 100)) for u in own})
        for prefix in PREFIXES:
            for suffix in SUFFIXES:
                values = [str(rng.randint(0, 500)) for _ in range(shape.history)]
                pipe.rpush(keys.metric_history(prefix, service, suffix), *values)
                pipe.set(keys.metric_value(prefix, service, suffix), values[-1])
    pipe.sadd(keys.SPAN_URLS, *urls)
    pipe.zadd(keys.SPAN_URLS_Z, url_counts)
    pipe.zadd(keys.SPAN_STATUS_CODES_Z, status_counts)
    pipe.zadd(keys.SPAN_NODE_URL_Z, node_url)
    pipe.sadd(keys.SPAN_NODE_ID, *nodes)
    pipe.zadd(keys.SPAN_NODE_ID_Z, nodes)
    pipe.sadd(keys.SPAN_USER_AGENT, *agents)
    pipe.zadd(keys.SPAN_USER_AGENT_Z, agents)
    pipe.sadd(keys.SPAN_STATUS_CODE, *(c for c, _ in STATUS))
    pipe.sadd(keys.SPAN_OPERATION_NAME, *(f"{s}.default.svc.cluster.local:9180/*" for s in services))
    pipe.sadd(keys.SPAN_UPSTREAM_CLUSTER, *(f"inbound|9180||{s}.default.svc.cluster.local" for s in services))
    pipe.set(keys.SPAN_COUNT, str(spans))
    pipe.set(keys.TRACE_COUNT, str(spans // 4))
    pipe.set(keys.METRIC_COUNT, str(shape.services * 4 * shape.history))
    for event in range(1, shape.alerts + 1):
        pipe.sadd(keys.SNORT_EVENTS, str(event))
        pipe.hset(keys.snort_event(event), mapping={
            "event-id": str(event), "event-second": str(1_790_000_000 + event), "signature-id": "10000003",
            "generator-id": "1", "signature-revision": "1", "priority": "1", "source-ip": "10.177.0.200",
            "destination-ip": "10.177.0.30", "sport-itype": str(40000 + event), "dport-icode": "80",
            "protocol": "6", "blocked": "0", "msg": "MALWARE-CNC User-Agent ASafaWeb Scan",
        })  # fmt: skip
    pipe.execute()
    return {"services": len(services), "urls": len(urls), "spans": spans, "alerts": shape.alerts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True, help="Redis URL (its database is flushed first)")
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--urls", type=int, default=1000)
    args = parser.parse_args()
    print(seed(redis.Redis.from_url(args.redis), Shape(args.services, args.urls)))


if __name__ == "__main__":
    main()
