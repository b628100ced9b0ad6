"""The stateful parts of the visibility pipeline fail, one at a time, while spans arrive, and
nothing Kafka acknowledged is lost: ``cloverctl get visibility`` through the controller's
NodePort ends showing exactly the number of spans sent.

With the datastore, Kafka, the collector, the controller (+ NodePort) and the visibility system
deployed, a thread sends batches of spans the test made into the cluster's Kafka (acks=all); a
batch not acknowledged is sent again, the same spans, which the ingest's upserts by primary key
make count once. Meanwhile one part fails:

* its pod is deleted (``kubectl delete pod``: a new pod, a new address; the StatefulSet or the
  Deployment makes it), or
* its container's processes are killed with SIGKILL from the node (the kubelet restarts the
  container in the same pod);

and comes back: Cassandra and Kafka with their data on their volume claims, the ingest driver
resuming from the checkpoint on its claim, the analytics from its state in Cassandra.

Redis keeps its data in an emptyDir (as in the original): a killed container comes back with
all of it (appendonly file), a deleted pod comes back empty, configuration and figures. There
"kept" means: once the configuration is set again (``set visibility``, then ``start
visibility``), the analytics republishes the figures from its running totals in Cassandra,
exactly.

Needs the images (``make images``: the archives in stack/cache/images)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
from tests.cluster.test_systems import cloverctl

pytestmark = pytest.mark.cluster_faults

RUN = uuid.uuid4().hex[:8]
SERVICE, AGENT = f"fault{RUN}", f"clover-cluster-test/fault-{RUN}"  # made up here
BATCH = 25  # spans per batch
BATCH_INTERVAL_S = 1.0
BACK_TIMEOUT_S = 420  # a part's replacement is ready within this
Pod = dict[str, Any]


class Feeder:
    """Sends batches of ``BATCH`` requests of SERVICE into Kafka, one batch a second, in a thread,
    numbering them on from the previous run; ``acknowledged`` counts the spans Kafka accepted."""

    def __init__(self, kubectl: Kubectl):
        self.kubectl = kubectl
        self.acknowledged = 0
        self.resent = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="span-feeder", daemon=True)
        self._thread.start()

    def stop(self) -> int:
        """Stops after the batch in flight is acknowledged; the spans acknowledged in all."""
        assert self._thread is not None
        self._stop.set()
        self._thread.join(timeout=BACK_TIMEOUT_S + 30)
        assert not self._thread.is_alive(), "a batch was still not acknowledged"
        assert self.error is None, self.error
        return self.acknowledged

    def _run(self) -> None:
        bootstrap = kafka_address(self.kubectl)
        while not self._stop.is_set():
            batch = requests(SERVICE, AGENT, BATCH, first=self.acknowledged)
            deadline = time.monotonic() + BACK_TIMEOUT_S
            while True:  # the same spans again until Kafka acknowledges them
                try:
                    produce(bootstrap, batch, timeout=10)
                    break
                except Exception as exc:  # the broker is away: ask again where it is, and resend
                    if time.monotonic() > deadline:
                        self.error = f"a batch of {BATCH} spans not acknowledged in {BACK_TIMEOUT_S}s: {exc!r}"
                        return
                    self.resent += 1
                    time.sleep(1)
                    with contextlib.suppress(AssertionError, KeyError):  # no pod, or no address, yet
                        bootstrap = kafka_address(self.kubectl)
            self.acknowledged += BATCH
            self._stop.wait(BATCH_INTERVAL_S)


@pytest.fixture(scope="module")
def loaded(cluster_paths: ClusterPaths, timings: Timings) -> None:
    load_images(cluster_paths, timings, IMAGES)


@pytest.fixture(scope="module")
def systems(cluster_paths: ClusterPaths, kubectl: Kubectl, loaded: None, timings: Timings) -> Iterator[str]:
    yield from deployed_systems(cluster_paths, kubectl, timings)


@pytest.fixture(scope="module")
def running(systems: str, cluster_paths: ClusterPaths, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory,
            timings: Timings) -> str:  # fmt: skip
    """The visibility system running, SERVICE tracked, the collector started; the API token."""
    token = systems
    started = time.monotonic()
    cloverctl(cluster_paths, "create", "system", "visibility")
    timings["create system visibility (drivers ready, executors running)"] = time.monotonic() - started
    track(token, tmp_path_factory.mktemp("faults"), SERVICE)
    rest(token, "start", "visibility")
    return token


@pytest.fixture(scope="module")
def feeder(kubectl: Kubectl) -> Feeder:
    return Feeder(kubectl)


def the_pod(kubectl: Kubectl, selector: str) -> Pod:
    found = pods(kubectl, selector)
    assert len(found) == 1, f"{len(found)} pods with {selector}: {[p['metadata']['name'] for p in found]}"
    return found[0]


def ready(pod: Pod) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def restarts(pod: Pod) -> int:
    return sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses", []))


def until_back(kubectl: Kubectl, selector: str, came_back: Callable[[Pod], bool]) -> Pod:
    """The part's one pod once ``came_back`` says it is the part come back, and it is ready."""
    deadline = time.monotonic() + BACK_TIMEOUT_S
    while True:
        current = [p for p in pods(kubectl, selector) if p["metadata"].get("deletionTimestamp") is None]
        if len(current) == 1 and came_back(current[0]) and ready(current[0]):
            return current[0]
        if time.monotonic() > deadline:
            states = [(p["metadata"]["name"], p["status"].get("phase"), restarts(p)) for p in current]
            raise AssertionError(f"{selector}: not back and ready after {BACK_TIMEOUT_S}s: {states}")
        time.sleep(2)


def delete_pod(kubectl: Kubectl, selector: str) -> Pod:
    """``kubectl delete pod`` (graceful); the pod its controller makes instead, once ready."""
    gone = the_pod(kubectl, selector)["metadata"]
    kubectl("-n", NAMESPACE, "delete", "pod", gone["name"], "--wait=true", timeout=180)
    return until_back(kubectl, selector, lambda pod: pod["metadata"]["uid"] != gone["uid"])


def container_processes(container_id: str) -> list[int]:
    """The node's processes in the container's cgroup (its id is in the cgroup's name)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if container_id in (entry / "cgroup").read_text():
                    found.append(int(entry.name))
            except OSError:  # gone meanwhile
                pass
    return found


def kill_container(kubectl: Kubectl, selector: str) -> Pod:
    """SIGKILL to every process of the pod's container, from the node; the same pod once the
    kubelet restarted the container and it is ready again."""
    pod = the_pod(kubectl, selector)
    before = restarts(pod)
    (status,) = pod["status"]["containerStatuses"]
    container_id = status["containerID"].removeprefix("containerd://")
    victims = container_processes(container_id)
    assert victims, f"no process of {pod['metadata']['name']}'s container {container_id[:12]} on this node"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    uid = pod["metadata"]["uid"]
    return until_back(kubectl, selector, lambda p: p["metadata"]["uid"] == uid and restarts(p) > before)


FAULTS = {"delete pod": delete_pod, "kill -9": kill_container}
PARTS = {
    "ingest driver": "app=clover-ingest",
    "analytics driver": "app=clover-analytics",
    "kafka": "app=kafka",
    "cassandra": "app=cassandra",
}


@pytest.mark.parametrize(
    ("part", "fault"),
    [("ingest driver", "delete pod"), ("analytics driver", "kill -9"), ("kafka", "delete pod"),
     ("cassandra", "delete pod"), ("ingest driver", "kill -9"), ("analytics driver", "delete pod"),
     ("kafka", "kill -9"), ("cassandra", "kill -9")],
)  # fmt: skip
def test_a_stateful_part_fails_while_spans_arrive_and_no_accepted_span_is_lost(
    running: str, kubectl: Kubectl, feeder: Feeder, timings: Timings, part: str, fault: str
) -> None:
    token = running
    feeder.start()
    time.sleep(5)  # batches arriving
    started = time.monotonic()
    FAULTS[fault](kubectl, PARTS[part])
    timings[f"{part}, {fault}: back and ready after"] = time.monotonic() - started
    time.sleep(5)  # batches arriving after it is back
    sent = feeder.stop()
    started = time.monotonic()
    assert wait_shown(token, SERVICE, AGENT, sent) == (sent, sent)
    timings[f"{part}, {fault}: all {sent} spans shown after"] = time.monotonic() - started
    print(f"[faults] {part}, {fault}: {sent} spans acknowledged, {feeder.resent} batch sends retried", flush=True)


def test_redis_killed_keeps_configuration_and_figures(running: str, kubectl: Kubectl, feeder: Feeder) -> None:
    token = running
    feeder.start()
    time.sleep(5)
    kill_container(kubectl, "app=redis")  # the appendonly file in the pod's emptyDir stays
    time.sleep(5)
    sent = feeder.stop()
    assert wait_shown(token, SERVICE, AGENT, sent) == (sent, sent)


def test_redis_pod_deleted_comes_back_empty_and_figures_are_republished_from_cassandra(
    running: str, kubectl: Kubectl, feeder: Feeder, tmp_path: Path
) -> None:
    token = running
    feeder.start()
    time.sleep(5)
    delete_pod(kubectl, "app=redis")
    sent = feeder.stop()
    assert shown(token, SERVICE, AGENT) == (None, None)  # a new, empty Redis: nothing tracked, nothing published
    track(token, tmp_path, SERVICE)
    # The collector still runs: start answers "already running" and sets the analytics' flag again
    # (it was in the Redis that was lost).
    assert rest(token, "start", "visibility").startswith("Collector already running on pid: ")
    assert wait_shown(token, SERVICE, AGENT, sent) == (sent, sent)
