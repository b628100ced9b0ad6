"""The trace backend and Prometheus in the cluster: ``cloverctl create system monitoring``
(``k8s/monitoring``) runs Jaeger and Prometheus in clover-system; Prometheus finds a pod of
namespace ``default`` with a port named ``stats`` (as the sample chain's) through the headless
Service ``clover-stats`` and scrapes exactly the value the test's pod exports; Jaeger keeps a span the test
sends over OTLP; ``delete system monitoring`` leaves nothing of them. Needs the images
(``make images``: the archives in stack/cache/images)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stack.cluster.layout import ClusterPaths
from tests.cluster.conftest import Kubectl, Timings, load_images
from tests.cluster.test_systems import OWN, cloverctl, namespace_contents

K8S = Path(__file__).resolve().parents[2] / "k8s"
NAMESPACE = "clover-system"
IMAGES = ("clover-jaeger", "clover-prometheus", "clover-base")
RUN = uuid.uuid4().hex[:8]
EXPORTER = f"stats-exporter-{RUN}"
EXPORTED_VALUE = 4242 + int(RUN[:2], 16)  # made up here: Prometheus must show exactly this
TRACED_SERVICE = f"otlp-check-{RUN}"


def restricted_pod(name: str, command: list[str], ports: dict[str, int], **labels: str) -> dict[str, Any]:
    """A pod of namespace default running ``command`` in the base image, restricted as Clover's own
    pods are, ready once its first port accepts connections."""
    first = next(iter(ports))
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name, **labels}},
            "spec": {"automountServiceAccountToken": False, "enableServiceLinks": False,
                     "terminationGracePeriodSeconds": 2,
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [{"name": "main", "image": "opnfv/clover-base:latest",
                                     "imagePullPolicy": "IfNotPresent", "command": command,
                                     "ports": [{"name": n, "containerPort": p} for n, p in ports.items()],
                                     "readinessProbe": {"tcpSocket": {"port": first}, "periodSeconds": 1},
                                     "securityContext": {"allowPrivilegeEscalation": False,
                                                         "readOnlyRootFilesystem": True,
                                                         "capabilities": {"drop": ["ALL"]}},
                                     "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                                                   "limits": {"cpu": "500m", "memory": "128Mi"}}}]}}  # fmt: skip


def ready_pod(kubectl: Kubectl, manifest: dict[str, Any]) -> dict[str, Any]:
    """Create the pod and wait until it is ready; returns it as the API shows it."""
    kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    name = manifest["metadata"]["name"]
    kubectl("-n", "default", "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=120s", timeout=150)
    return dict(kubectl.json("-n", "default", "get", "pod", name))


def pod_ip(kubectl: Kubectl, selector: str) -> str:
    return str(kubectl.json("-n", NAMESPACE, "get", "pods", "-l", selector)["items"][0]["status"]["podIP"])


def get(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.loads(answer.read())


def poll(what: str, fetch: Any, done: Any, timeout: float = 120, every: float = 2) -> Any:
    """``fetch()`` until ``done(value)``; fails naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = fetch()
        except OSError as exc:
            value = exc
        if not isinstance(value, OSError) and done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f}s; last: {value!r}"[:3000])
        time.sleep(every)


@pytest.fixture(scope="module")
def monitoring(cluster_paths: ClusterPaths, kubectl: Kubectl, timings: Timings) -> Iterator[None]:
    load_images(cluster_paths, timings, IMAGES)
    started = time.monotonic()
    cloverctl(cluster_paths, "create", "system", "monitoring")
    timings["create system monitoring (ready)"] = time.monotonic() - started
    yield
    kubectl("-n", "default", "delete", "pod", EXPORTER, "--ignore-not-found", "--wait=true")
    cloverctl(cluster_paths, "delete", "system", "monitoring", check=False)


def test_the_manifests_pass_the_api_servers_checks_and_pod_security(kubectl: Kubectl) -> None:
    kubectl("apply", "-k", str(K8S / "clover-system"))
    kubectl("apply", "-f", str(K8S / "clovisor" / "namespace.yaml"))  # a dry run checks only in an existing one
    try:
        for directory in ("monitoring", "clovisor"):
            done = subprocess.run([*kubectl.argv, "apply", "--dry-run=server", "-k", str(K8S / directory)],
                                  capture_output=True, text=True, timeout=120)  # fmt: skip
            assert done.returncode == 0, (directory, done.stderr)
            assert "Warning" not in done.stderr, (directory, done.stderr)
            assert "(server dry run)" in done.stdout, (directory, done.stdout)
    finally:
        kubectl("delete", "namespace", "clovisor", "--wait=true", timeout=180)


def test_prometheus_scrapes_a_stats_port_in_default(monitoring: None, kubectl: Kubectl, timings: Timings) -> None:
    script = ("import time, prometheus_client as p; "
              f"p.Gauge('clover_cluster_test_value', 'made up by the test').set({EXPORTED_VALUE}); "
              "p.start_http_server(15090); time.sleep(3600)")  # fmt: skip
    part_of_clover = {"app.kubernetes.io/part-of": "clover"}  # as the sample chain's pods
    manifest = restricted_pod(EXPORTER, ["python", "-c", script], {"stats": 15090}, **part_of_clover)
    exporter = ready_pod(kubectl, manifest)
    instance = f"{exporter['status']['podIP']}:15090"
    prometheus = f"http://{pod_ip(kubectl, 'app=prometheus')}:9090"
    started = time.monotonic()
    query = urllib.parse.quote(f'clover_cluster_test_value{{job="clover-sdc",instance="{instance}"}}')
    found = poll("the exporter's value in Prometheus", lambda: get(f"{prometheus}/api/v1/query?query={query}"),
                 lambda answer: answer["data"]["result"])  # fmt: skip
    timings["pod ready -> its value in Prometheus"] = time.monotonic() - started
    assert [float(r["value"][1]) for r in found["data"]["result"]] == [EXPORTED_VALUE]
    targets = get(f"{prometheus}/api/v1/targets?state=active")["data"]["activeTargets"]
    health = {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in targets}
    assert health == {("prometheus", "127.0.0.1:9090"): "up", ("clover-sdc", instance): "up"}


def test_jaeger_keeps_a_span_sent_over_otlp(monitoring: None, kubectl: Kubectl) -> None:
    jaeger = pod_ip(kubectl, "app=jaeger")
    trace_id = uuid.uuid4().hex
    now_ns = time.time_ns()
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": TRACED_SERVICE}}]},
        "scopeSpans": [{"spans": [{"traceId": trace_id, "spanId": trace_id[:16], "name": "GET /check", "kind": 2,
                                   "startTimeUnixNano": str(now_ns), "endTimeUnixNano": str(now_ns + 1_000_000)}]}],
    }]}  # fmt: skip
    request = urllib.request.Request(f"http://{jaeger}:4318/v1/traces", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
    traces = poll("the span in Jaeger's query API", lambda: get(f"http://{jaeger}:16686/api/traces/{trace_id}"),
                  lambda answer: answer.get("data"))  # fmt: skip
    (trace,) = traces["data"]
    assert [(s["operationName"], trace["processes"][s["processID"]]["serviceName"]) for s in trace["spans"]] == [
        ("GET /check", TRACED_SERVICE)
    ]
    assert TRACED_SERVICE in get(f"http://{jaeger}:16686/api/services")["data"]


def test_delete_system_monitoring_leaves_nothing(
    monitoring: None, cluster_paths: ClusterPaths, kubectl: Kubectl, timings: Timings
) -> None:
    started = time.monotonic()
    cloverctl(cluster_paths, "delete", "system", "monitoring")
    timings["delete system monitoring (gone)"] = time.monotonic() - started
    assert namespace_contents(kubectl) == OWN
    assert kubectl("-n", "default", "get", "service", "clover-stats", "--ignore-not-found", "-o", "name") == ""
