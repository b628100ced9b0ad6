"""A Deployment of the busybox image, its logs and exec, and a Service reached by name."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from stack.cluster import versions
from tests.cluster.conftest import Kubectl, Timings

NAMESPACE = "clover-test"
PAGE = "served by the clover cluster test"

MANIFESTS = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NAMESPACE},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{
                        "name": "httpd",
                        "image": versions.BUSYBOX_IMAGE,
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", f"mkdir -p /tmp/www && echo '{PAGE}' > /tmp/www/index.html && "
                                    "echo web starting on 8080 && exec httpd -f -v -p 8080 -h /tmp/www"],
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                    }],
                },
            },
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": NAMESPACE},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    },
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client", "namespace": NAMESPACE},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "client", "image": versions.BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                            "command": ["sleep", "3600"]}],
        },
    },
]  # fmt: skip


@pytest.fixture(scope="module")
def workload(kubectl: Kubectl, timings: Timings) -> Iterator[None]:
    import time

    started = time.monotonic()
    kubectl("apply", "-f", "-", stdin="\n---\n".join(json.dumps(m) for m in MANIFESTS))
    kubectl("-n", NAMESPACE, "rollout", "status", "deployment/web", "--timeout=180s")
    kubectl("-n", NAMESPACE, "wait", "--for=condition=Ready", "pod/client", "--timeout=180s")
    timings["Deployment and client pod ready after"] = time.monotonic() - started
    yield
    kubectl("delete", "namespace", NAMESPACE, "--timeout=120s")


def web_pod(kubectl: Kubectl) -> str:
    pods = kubectl.json("-n", NAMESPACE, "get", "pods", "-l", "app=web")["items"]
    assert len(pods) == 1
    return str(pods[0]["metadata"]["name"])


def test_the_deployment_runs_and_its_logs_and_exec_work(kubectl: Kubectl, workload: None) -> None:
    pod = web_pod(kubectl)
    assert kubectl.json("-n", NAMESPACE, "get", "pod", pod)["status"]["phase"] == "Running"
    assert "web starting on 8080" in kubectl("-n", NAMESPACE, "logs", pod)
    assert kubectl("-n", NAMESPACE, "exec", pod, "--", "cat", "/tmp/www/index.html") == PAGE + "\n"


def test_a_service_is_reached_by_name_through_cluster_dns(kubectl: Kubectl, workload: None) -> None:
    service_ip = kubectl.json("-n", NAMESPACE, "get", "service", "web")["spec"]["clusterIP"]
    # wget resolves through the C library: the search domains make web.<ns> work as in the original.
    for name in (f"web.{NAMESPACE}", f"web.{NAMESPACE}.svc.cluster.local"):
        body = kubectl("-n", NAMESPACE, "exec", "client", "--", "wget", "-q", "-O", "-", f"http://{name}/")
        assert body == PAGE + "\n", name
    # busybox's nslookup asks the cluster DNS directly, without search domains.
    lookup = kubectl("-n", NAMESPACE, "exec", "client", "--", "nslookup", f"web.{NAMESPACE}.svc.cluster.local")
    assert f"Address: {service_ip}" in lookup, lookup


def test_a_pod_resolves_the_api_server_and_nothing_outside(kubectl: Kubectl, workload: None) -> None:
    resolv = kubectl("-n", NAMESPACE, "exec", "client", "--", "cat", "/etc/resolv.conf")
    assert "nameserver 10.96.0.10" in resolv
    assert f"search {NAMESPACE}.svc.cluster.local svc.cluster.local cluster.local" in resolv
    lookup = kubectl("-n", NAMESPACE, "exec", "client", "--", "nslookup", "kubernetes.default.svc.cluster.local")
    assert "Address: 10.96.0.1" in lookup, lookup
    outside = kubectl("-n", NAMESPACE, "exec", "client", "--", "nslookup", "example.com", check=False)
    assert "server can't find example.com: NXDOMAIN" in outside, outside
