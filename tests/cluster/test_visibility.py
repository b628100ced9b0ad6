"""The visibility pipeline in the cluster, with exact counts end to end: spans the test made (a
made-up service tracked through the controller, a made-up user agent) go into the cluster's
Kafka in the collector's wire format (protobuf ``clover.records.Span`` on ``clover.spans``), and
``cloverctl get visibility`` through the controller's NodePort shows exactly that many, computed
by Spark executor pods from the Kafka and Cassandra pods:

* ``./spark-submit.sh --master k8s://... --deploy-mode cluster`` runs the ingest and the
  analytics once each (driver and executor pods, the project's own script);
* ``cloverctl create system visibility`` runs both as long-lived Spark applications (drivers in
  their own pods, executor pods), ``--executors 2`` scales them, and ``delete system
  visibility`` leaves nothing of them.

Needs the images (``make images``: the archives in stack/cache/images)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clover import topics
from protos import records_pb2
from stack.cluster.layout import ClusterPaths
from tests.cluster.conftest import Kubectl, Timings, load_images
from tests.cluster.test_systems import NODE_PORT_URL, OWN, cloverctl, cql, get_json, namespace_contents

ROOT = Path(__file__).resolve().parents[2]
CLOVERCTL = Path(sys.executable).parent / "cloverctl"
NAMESPACE = "clover-system"
IMAGES = ("clover-redis", "clover-cassandra", "clover-kafka", "clover-collector", "clover-controller", "clover-spark")
RUN = uuid.uuid4().hex[:8]
# Made up here: two services (one per way of running the jobs) and their user agents.
ONCE_SERVICE, ONCE_AGENT, ONCE_COUNT = f"once{RUN}", f"clover-cluster-test/once-{RUN}", 37
LIVE_SERVICE, LIVE_AGENT, LIVE_COUNT, MORE_COUNT = f"live{RUN}", f"clover-cluster-test/live-{RUN}", 53, 29
INGEST_EXECUTORS = "spark-role=executor,app=clover-ingest-executor"
ANALYTICS_EXECUTORS = "spark-role=executor,app=clover-analytics-executor"


@pytest.fixture(scope="module")
def loaded(cluster_paths: ClusterPaths, timings: Timings) -> None:
    load_images(cluster_paths, timings, IMAGES)


@pytest.fixture(scope="module")
def systems(cluster_paths: ClusterPaths, kubectl: Kubectl, loaded: None, timings: Timings) -> Iterator[str]:
    """Datastore, Kafka, collector, controller and its NodePort; yields the controller's API token."""
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


def requests(service: str, agent: str, count: int) -> list[records_pb2.Span]:
    """``count`` requests of ``service`` (one server span each, HTTP 200), sent by ``agent``."""
    start_us = int(time.time() * 1_000_000)
    return [records_pb2.Span(
        trace_id=f"{service}-{uuid.uuid4().hex}", span_id="s", service=service, operation_name="GET /visible",
        start_time_us=start_us + i * 1000, duration_us=2000 + i, http_method="GET", http_url=f"/visible/{i % 3}",
        http_status_code=200, user_agent=agent, node_id=f"{service}-pod", source=records_pb2.JAEGER,
        kind=records_pb2.SPAN_KIND_SERVER, upstream_cluster="none",
    ) for i in range(count)]  # fmt: skip


def produce(bootstrap: str, spans: list[records_pb2.Span]) -> None:
    """Send ``spans`` to clover.spans as the collector does (keyed by trace id) and wait until
    Kafka acknowledged every one."""
    from kafka import KafkaProducer

    topics.ensure_topics(bootstrap)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, compression_type="lz4")
    try:
        sent = [producer.send(topics.SPANS, key=s.trace_id.encode(), value=s.SerializeToString()) for s in spans]
        producer.flush(timeout=60)
        for future in sent:
            future.get(timeout=0)
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


def submit(kubectl: Kubectl, cluster_paths: ClusterPaths, name: str, job: str, *job_args: str) -> None:
    """``./spark-submit.sh --master k8s://... --deploy-mode cluster`` to completion; the driver
    pod succeeded and its executor pods are kept (not deleted on termination) to be counted."""
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster_paths.kubeconfig),
        "CLOVER_KUBECTL": str(cluster_paths.bin / "kubectl"),
    }
    argv = [str(ROOT / "spark-submit.sh"), "--master", "k8s://https://10.251.0.1:6443", "--deploy-mode", "cluster",
            "--name", name, "--conf", f"spark.kubernetes.driver.pod.name={name}-driver",
            "--conf", "spark.executor.instances=1", "--conf", "spark.kubernetes.executor.deleteOnTermination=false",
            "--conf", f"spark.kubernetes.executor.label.app={name}-executor", job, *job_args]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
        log = kubectl("-n", NAMESPACE, "logs", f"{name}-driver", check=False)
        print(f"$ spark-submit.sh ... {job}: exit {done.returncode}\n{done.stderr[-2000:]}\n{log[-3000:]}", flush=True)
        assert done.returncode == 0, done.stderr[-3000:] + log[-3000:]
        assert kubectl.json("-n", NAMESPACE, "get", "pod", f"{name}-driver")["status"]["phase"] == "Succeeded"
        executors = pods(kubectl, f"spark-role=executor,app={name}-executor")
        assert len(executors) == 1, [p["metadata"]["name"] for p in executors]
        assert executors[0]["spec"]["automountServiceAccountToken"] is False  # the pod template's
    finally:  # its executors go with it (owner references)
        kubectl("-n", NAMESPACE, "delete", "pod", f"{name}-driver", "--ignore-not-found", "--wait=true", timeout=180)


def test_the_visibility_system_names_what_it_needs(cluster_paths: ClusterPaths, kubectl: Kubectl) -> None:
    kubectl("apply", "-k", str(ROOT / "k8s" / "clover-system"))
    done = cloverctl(cluster_paths, "create", "system", "visibility", check=False)
    assert done.returncode == 1
    assert "needs, in clover-system: Service/cassandra (cloverctl create system datastore)" in done.stderr
    assert "Service/kafka (cloverctl create system kafka)" in done.stderr
    assert kubectl("-n", NAMESPACE, "get", "statefulset,deployment,role", "-o", "name").strip() == ""  # nothing applied


def test_spark_submit_runs_the_ingest_and_the_analytics_in_cluster_mode(
    systems: str, cluster_paths: ClusterPaths, kubectl: Kubectl, timings: Timings, tmp_path: Path
) -> None:
    token = systems
    kubectl("apply", "-f", str(ROOT / "k8s" / "visibility" / "spark-rbac.yaml"))  # what a submission needs
    track(token, tmp_path, ONCE_SERVICE)
    spans = requests(ONCE_SERVICE, ONCE_AGENT, ONCE_COUNT)
    produce(kafka_address(kubectl), spans)
    started = time.monotonic()
    submit(kubectl, cluster_paths, "clover-ingest-once", "jobs/ingest.py", "--once")
    timings["spark-submit.sh --deploy-mode cluster jobs/ingest.py --once"] = time.monotonic() - started
    ip = kubectl.json("-n", NAMESPACE, "get", "pod", "cassandra-0")["status"]["podIP"]
    stored = cql(ip, f"SELECT count(*) FROM visibility.spans WHERE service = '{ONCE_SERVICE}' ALLOW FILTERING")
    assert stored == [(ONCE_COUNT,)]
    started = time.monotonic()
    submit(kubectl, cluster_paths, "clover-analytics-once", "jobs/visibility.py", "--once")
    timings["spark-submit.sh --deploy-mode cluster jobs/visibility.py --once"] = time.monotonic() - started
    assert shown(token, ONCE_SERVICE, ONCE_AGENT) == (ONCE_COUNT, ONCE_COUNT)


def test_create_system_visibility_counts_exactly_on_executor_pods(
    systems: str, cluster_paths: ClusterPaths, kubectl: Kubectl, timings: Timings, tmp_path: Path
) -> None:
    token = systems
    started = time.monotonic()
    cloverctl(cluster_paths, "create", "system", "visibility")
    timings["create system visibility (drivers ready, executors running)"] = time.monotonic() - started
    for selector in (INGEST_EXECUTORS, ANALYTICS_EXECUTORS):
        running = [p for p in pods(kubectl, selector) if p["status"]["phase"] == "Running"]
        assert len(running) == 1, selector  # spark.executor.instances=1, the manifest's
        owner = running[0]["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "Pod" and owner["name"].startswith(("clover-ingest-0", "clover-analytics-"))
    driver = pods(kubectl, "app=clover-ingest")[0]["spec"]
    assert driver["serviceAccountName"] == "clover-spark" and driver["automountServiceAccountToken"] is True
    track(token, tmp_path, ONCE_SERVICE, LIVE_SERVICE)
    rest(token, "start", "visibility")  # the analytics runs while the collector is started
    started = time.monotonic()
    produce(kafka_address(kubectl), requests(LIVE_SERVICE, LIVE_AGENT, LIVE_COUNT))
    assert wait_shown(token, LIVE_SERVICE, LIVE_AGENT, LIVE_COUNT) == (LIVE_COUNT, LIVE_COUNT)
    timings["spans in Kafka -> figures through the NodePort"] = time.monotonic() - started
    assert shown(token, ONCE_SERVICE, ONCE_AGENT) == (ONCE_COUNT, ONCE_COUNT)  # the earlier runs' figures stand


def test_executors_scale_and_new_drivers_resume(
    systems: str, cluster_paths: ClusterPaths, kubectl: Kubectl, timings: Timings
) -> None:
    token = systems
    before = {p["metadata"]["name"] for p in pods(kubectl, "spark-role=executor")}
    started = time.monotonic()
    cloverctl(cluster_paths, "create", "system", "visibility", "--executors", "2")
    timings["create system visibility --executors 2 (ready)"] = time.monotonic() - started
    for selector in (INGEST_EXECUTORS, ANALYTICS_EXECUTORS):
        running = {p["metadata"]["name"] for p in pods(kubectl, selector) if p["status"]["phase"] == "Running"}
        assert len(running) == 2 and not running & before, (selector, running)  # new drivers, two executors each
    # The new ingest driver resumes from its checkpoint (its volume claim): the new spans are
    # counted once more, the earlier ones not again.
    produce(kafka_address(kubectl), requests(LIVE_SERVICE, LIVE_AGENT, MORE_COUNT))
    total = LIVE_COUNT + MORE_COUNT
    assert wait_shown(token, LIVE_SERVICE, LIVE_AGENT, total) == (total, total)
    assert shown(token, ONCE_SERVICE, ONCE_AGENT) == (ONCE_COUNT, ONCE_COUNT)


def test_delete_system_visibility_leaves_nothing_of_it(
    systems: str, cluster_paths: ClusterPaths, kubectl: Kubectl, timings: Timings
) -> None:
    started = time.monotonic()
    cloverctl(cluster_paths, "delete", "system", "visibility")
    timings["delete system visibility (gone)"] = time.monotonic() - started
    assert pods(kubectl, "spark-role") == []
    for args in (("controller", "nodeport"), ("controller",), ("collector",), ("kafka",), ("datastore",)):
        cloverctl(cluster_paths, "delete", "system", *args)
    deadline = time.monotonic() + 120  # what the drivers made (executor config maps) goes with them
    while time.monotonic() < deadline and namespace_contents(kubectl) != OWN:
        time.sleep(2)
    assert namespace_contents(kubectl) == OWN
