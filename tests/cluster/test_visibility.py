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

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.cluster.layout import ClusterPaths
from tests.cluster.conftest import Kubectl, Timings, load_images
from tests.cluster.pipeline import (
    IMAGES,
    NAMESPACE,
    deployed_systems,
    kafka_address,
    pods,
    produce,
    requests,
    rest,
    shown,
    track,
    wait_shown,
)
from tests.cluster.test_systems import OWN, cloverctl, cql, namespace_contents

ROOT = Path(__file__).resolve().parents[2]
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
    yield from deployed_systems(cluster_paths, kubectl, timings)


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
    produce(kafka_address(kubectl), requests(LIVE_SERVICE, LIVE_AGENT, MORE_COUNT, first=LIVE_COUNT))
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
