"""Clovisor in the cluster: ``cloverctl create system clovisor`` runs its DaemonSet (Redis's
Secret copied from clover-system) beside the datastore, Kafka and the trace backend; a pod the
test starts in namespace ``default`` behind a Service with an ``http`` port gets Clovisor's
programs on its host veth (``tc filter show``, found from the pod's own ``iflink``); N requests
the test sends it with a made-up user agent are exactly N spans in the cluster's Kafka
(``clover.spans``) and in Jaeger; without the Service the programs come off the veth; the pod's
deletion leaves Clovisor running with nothing traced; ``delete system clovisor`` removes it all.
Needs the images (``make images``: the archives in stack/cache/images)."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from clover import topics
from protos import records_pb2
from stack.cluster.layout import ClusterPaths
from tests.cluster.conftest import Kubectl, Timings, load_images
from tests.cluster.pipeline import kafka_address
from tests.cluster.test_monitoring import get, pod_ip, poll, ready_pod, restricted_pod
from tests.cluster.test_systems import cloverctl

IMAGES = ("clover-redis", "clover-cassandra", "clover-kafka", "clover-jaeger", "clover-prometheus", "clover-clovisor",
          "clover-base")  # fmt: skip
RUN = uuid.uuid4().hex[:8]
SERVER = f"traced-{RUN}"  # the pod and the Service Clovisor names its spans after
AGENT = f"clover-cluster-test/clovisor-{RUN}"  # made up here
REQUESTS = 19
HTTP_PORT = 8080
METRICS_URL = "http://10.251.0.1:9470/metrics"  # hostNetwork: the node's address


def service_manifest() -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVER, "namespace": "default"},
            "spec": {"selector": {"app": SERVER},
                     "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http"}]}}  # fmt: skip


@pytest.fixture(scope="module")
def clovisor(cluster_paths: ClusterPaths, kubectl: Kubectl, timings: Timings) -> Iterator[None]:
    load_images(cluster_paths, timings, IMAGES)
    started = time.monotonic()
    for system in ("datastore", "kafka", "monitoring"):
        cloverctl(cluster_paths, "create", "system", system)
    timings["create system datastore, kafka, monitoring (ready)"] = time.monotonic() - started
    started = time.monotonic()
    cloverctl(cluster_paths, "create", "system", "clovisor")
    timings["create system clovisor (ready)"] = time.monotonic() - started
    yield
    print("Clovisor's log:\n" + kubectl("-n", "clovisor", "logs", "-l", "app=clovisor", "--tail", "40", check=False))
    kubectl("-n", "default", "delete", "pod,service", SERVER, "--ignore-not-found", "--wait=true")
    for system in ("clovisor", "monitoring", "kafka", "datastore"):
        cloverctl(cluster_paths, "delete", "system", system, check=False)


def metric(name: str) -> float:
    """One unlabelled sample of Clovisor's /metrics."""
    with urllib.request.urlopen(METRICS_URL, timeout=5) as answer:
        text = answer.read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in Clovisor's metrics"
    return float(found.group(1))


def host_veth(kubectl: Kubectl, pod: str) -> str:
    """The host side of the pod's eth0: the link whose index the pod's ``iflink`` names."""
    index = int(kubectl("-n", "default", "exec", pod, "--", "cat", "/sys/class/net/eth0/iflink").strip())
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout)
    (name,) = [link["ifname"] for link in links if link["ifindex"] == index]
    return str(name)


def filters(veth: str) -> dict[str, str]:
    """``tc filter show`` of the veth's clsact ingress and egress."""
    return {hook: subprocess.run(["tc", "filter", "show", "dev", veth, hook], capture_output=True, text=True,
                                 check=True).stdout for hook in ("ingress", "egress")}  # fmt: skip


def send_requests(ip: str, count: int) -> None:
    for i in range(count):
        connection = http.client.HTTPConnection(ip, HTTP_PORT, timeout=10)
        try:
            connection.request("GET", f"/?n={i}", headers={"User-Agent": AGENT})
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200
        finally:
            connection.close()


def spans_of_agent(bootstrap: str, settle: float = 10, timeout: float = 120) -> list[records_pb2.Span]:
    """Every span on clover.spans with the test's user agent, read from the beginning until
    ``REQUESTS`` of them are there and nothing more came for ``settle`` seconds."""
    from kafka import KafkaConsumer

    topics.ensure_topics(bootstrap)
    consumer = KafkaConsumer(topics.SPANS, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, consumer_timeout_ms=1000)  # fmt: skip
    found: list[records_pb2.Span] = []
    deadline = time.monotonic() + timeout
    last_change = time.monotonic()
    try:
        while time.monotonic() < deadline:
            for message in consumer:
                span = records_pb2.Span.FromString(message.value)
                if span.user_agent == AGENT:
                    found.append(span)
                    last_change = time.monotonic()
            if len(found) >= REQUESTS and time.monotonic() - last_change > settle:
                break
    finally:
        consumer.close()
    return found


def test_clovisor_traces_a_pod_of_default_exactly(
    clovisor: None, kubectl: Kubectl, cluster_paths: ClusterPaths, timings: Timings
) -> None:
    (agent_pod,) = kubectl.json("-n", "clovisor", "get", "pods", "-l", "app=clovisor")["items"]
    assert agent_pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] == ["BPF", "PERFMON",
                                                                                            "NET_ADMIN"]  # fmt: skip
    secret = kubectl.json("-n", "clovisor", "get", "secret", "clover-redis")["data"]
    assert secret == kubectl.json("-n", "clover-system", "get", "secret", "clover-redis")["data"]
    assert metric("clovisor_pods") == 0
    kubectl("apply", "-f", "-", stdin=json.dumps(service_manifest()))
    server = ready_pod(kubectl, restricted_pod(
        SERVER, ["python", "-m", "http.server", str(HTTP_PORT), "--bind", "0.0.0.0", "--directory", "/tmp"],
        {"http": HTTP_PORT}))  # fmt: skip
    veth = host_veth(kubectl, SERVER)
    started = time.monotonic()
    poll("Clovisor attached to the pod", lambda: metric("clovisor_pods"), lambda n: n == 1, timeout=60, every=1)
    timings["pod ready -> Clovisor attached"] = time.monotonic() - started
    attached = filters(veth)
    assert "clovisor:from_pod" in attached["ingress"] and "clovisor:to_pod" in attached["egress"], attached

    send_requests(server["status"]["podIP"], REQUESTS)
    started = time.monotonic()
    spans = spans_of_agent(kafka_address(kubectl))
    timings[f"{REQUESTS} requests -> their spans in Kafka (+10 s settle)"] = time.monotonic() - started
    assert len(spans) == REQUESTS
    assert {(s.source, s.service, s.http_method, s.http_status_code) for s in spans} == {
        (records_pb2.CLOVISOR, SERVER, "GET", 200)
    }
    assert sorted(s.http_url for s in spans) == sorted(f"/?n={i}" for i in range(REQUESTS))

    jaeger = f"http://{pod_ip(kubectl, 'app=jaeger')}:16686"
    traces = poll("Clovisor's spans in Jaeger", lambda: get(f"{jaeger}/api/traces?service={SERVER}&limit=1000"),
                  lambda answer: sum(len(t["spans"]) for t in answer["data"]) >= REQUESTS)  # fmt: skip
    tags = [{t["key"]: t["value"] for t in s["tags"]} for trace in traces["data"] for s in trace["spans"]]
    assert [t.get("useragent") for t in tags] == [AGENT] * REQUESTS

    # The watcher follows the Service: without an http port nothing is traced and the programs go.
    kubectl("-n", "default", "delete", "service", SERVER, "--wait=true")
    poll("Clovisor detached", lambda: metric("clovisor_pods"), lambda n: n == 0, timeout=60, every=1)
    assert not any("clovisor:" in text for text in filters(veth).values()), filters(veth)

    kubectl("apply", "-f", "-", stdin=json.dumps(service_manifest()))
    poll("Clovisor attached again", lambda: metric("clovisor_pods"), lambda n: n == 1, timeout=60, every=1)
    kubectl("-n", "default", "delete", "pod", SERVER, "--wait=true")
    poll("Clovisor let go of the deleted pod", lambda: metric("clovisor_pods"), lambda n: n == 0, timeout=60)
    (after,) = kubectl.json("-n", "clovisor", "get", "pods", "-l", "app=clovisor")["items"]
    assert after["metadata"]["uid"] == agent_pod["metadata"]["uid"]
    assert after["status"]["containerStatuses"][0]["restartCount"] == 0
    assert after["status"]["containerStatuses"][0]["ready"] is True


def test_delete_system_clovisor_removes_it(clovisor: None, kubectl: Kubectl, cluster_paths: ClusterPaths) -> None:
    cloverctl(cluster_paths, "delete", "system", "clovisor")
    assert kubectl("get", "clusterrole,clusterrolebinding", "-o", "name").count("clovisor") == 0
    done = kubectl("get", "namespace", "clovisor", "-o", "name", check=False)
    assert done.strip() in ("", "namespace/clovisor")  # going: its deletion finishes in the background
