"""What the cluster tests of the visibility pipeline share: the systems it needs deployed, spans
the test made put into the cluster's Kafka in the collector's wire format (protobuf
``clover.records.Span`` on ``clover.spans``), and the figures ``cloverctl get visibility`` shows
through the controller's NodePort."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clover import topics
from protos import records_pb2
from stack.cluster.layout import ClusterPaths
from tests.cluster.conftest import Kubectl, Timings
from tests.cluster.test_systems import NODE_PORT_URL, cloverctl, get_json

CLOVERCTL = Path(sys.executable).parent / "cloverctl"
NAMESPACE = "clover-system"
RUN_NONCE = uuid.uuid4().hex  # in the trace ids of one test session's spans
IMAGES = ("clover-redis", "clover-cassandra", "clover-kafka", "clover-collector", "clover-controller", "clover-spark")


def deployed_systems(cluster_paths: ClusterPaths, kubectl: Kubectl, timings: Timings) -> Iterator[str]:
    """Datastore, Kafka, collector, controller and its NodePort; yields the controller's API
    token; deletes them (and the visibility system) afterwards. The body of a module fixture."""
    started = time.monotonic()
    for args in (("datastore",), ("kafka",), ("collector",), ("controller",), ("controller", "nodeport")):
        cloverctl(cluster_paths, "create", "system", *args)
    get_json(f"{NODE_PORT_URL}/health")  # retried while kube-proxy writes the new Service's rules
    timings["create system datastore, kafka, collector, controller + nodeport (ready)"] = time.monotonic() - started
    encoded = kubectl.json("-n", NAMESPACE, "get", "secret", "clover-controller")["data"]["token"]
    yield base64.b64decode(encoded).decode()
    for args in (("visibility",), ("controller", "nodeport"), ("controller",), ("collector",), ("kafka",),
                 ("datastore",)):  # fmt: skip
        cloverctl(cluster_paths, "delete", "system", *args, check=False)


def rest(token: str, *args: str) -> str:
    """cloverctl through the controller's NodePort, as a user outside the cluster."""
    argv = [str(CLOVERCTL), "--controller", NODE_PORT_URL, "--token", token, *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    print(f"$ cloverctl {' '.join(args)}\n{done.stdout[-1500:]}{done.stderr[-1500:]}", flush=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def track(token: str, tmp_path: Path, *services: str) -> None:
    spec = tmp_path / "set_visibility.yaml"
    spec.write_text(json.dumps({"services": [{"name": s} for s in services]}))
    rest(token, "set", "visibility", "-f", str(spec))


def kafka_address(kubectl: Kubectl) -> str:
    """The broker at its pod's address (what it advertises; pods are routable from this node)."""
    return f"{kubectl.json('-n', NAMESPACE, 'get', 'pod', 'kafka-0')['status']['podIP']}:9092"


def requests(service: str, agent: str, count: int, first: int = 0) -> list[records_pb2.Span]:
    """``count`` requests of ``service`` (one server span each, HTTP 200), sent by ``agent``,
    numbered from ``first``: the same arguments make the same spans (trace and span ids)."""
    start_us = int(time.time() * 1_000_000)
    return [records_pb2.Span(
        trace_id=f"{service}-{RUN_NONCE}-{i}", span_id="s", service=service, operation_name="GET /visible",
        start_time_us=start_us + i * 1000, duration_us=2000 + i, http_method="GET", http_url=f"/visible/{i % 3}",
        http_status_code=200, user_agent=agent, node_id=f"{service}-pod", source=records_pb2.JAEGER,
        kind=records_pb2.SPAN_KIND_SERVER, upstream_cluster="none",
    ) for i in range(first, first + count)]  # fmt: skip


def produce(bootstrap: str, spans: list[records_pb2.Span], timeout: float = 60) -> None:
    """Send ``spans`` to clover.spans as the collector does (keyed by trace id) and wait until
    Kafka acknowledged every one (raises if one is not acknowledged within ``timeout``)."""
    from kafka import KafkaProducer

    topics.ensure_topics(bootstrap)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, compression_type="lz4",
                             max_block_ms=int(timeout * 1000), request_timeout_ms=int(timeout * 1000))  # fmt: skip
    try:
        sent = [producer.send(topics.SPANS, key=s.trace_id.encode(), value=s.SerializeToString()) for s in spans]
        producer.flush(timeout=timeout)
        for future in sent:
            future.get(timeout=0)  # type: ignore[no-untyped-call]  # kafka-python has no annotations
    finally:
        producer.close(timeout=10)


def shown(token: str, service: str, agent: str) -> tuple[float | None, ...]:
    """(the service's request count, the user agent's span count) as ``cloverctl get visibility`` shows them."""
    stats = json.loads(rest(token, "get", "visibility", "-s", "tracing", "--limit", "0", "-o", "json"))
    requests_seen = next((r.get("request_count") for r in stats["response_times"] if r["name"] == service), None)
    spans_seen = next((count for member, count in stats["user_agent_count"] if member == agent), None)
    return tuple(None if v is None else float(v) for v in (requests_seen, spans_seen))  # "53" and 53.0: both 53


def wait_shown(token: str, service: str, agent: str, count: int, timeout: float = 420) -> tuple[float | None, ...]:
    deadline = time.monotonic() + timeout
    while True:
        seen = shown(token, service, agent)
        if seen == (count, count) or time.monotonic() > deadline:
            return seen
        time.sleep(3)


def pods(kubectl: Kubectl, selector: str) -> list[dict[str, Any]]:
    return list(kubectl.json("-n", NAMESPACE, "get", "pods", "-l", selector)["items"])
