"""Clover's own systems in the cluster through cloverctl: ``create system datastore`` (Cassandra
on a persistent volume, Redis with its password from a Secret), ``create system controller`` and
``controller nodeport``, the controller reached from this machine through NodePort 32044,
Cassandra's data surviving its pod, ``create system kafka`` and ``collector`` driven through the
controller, ``get services``, ``--dry-run``, a missing image named, no cluster, and ``delete
system ...`` leaving the namespace empty. Needs the images (``make images``: the archives in
stack/cache/images)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack import probes
from stack.cluster.layout import ClusterPaths
from tests.cluster.conftest import Kubectl, Timings, load_images

CLOVERCTL = Path(sys.executable).parent / "cloverctl"
K8S = Path(__file__).resolve().parents[2] / "k8s"
NAMESPACE = "clover-system"
IMAGES = ("clover-redis", "clover-cassandra", "clover-controller", "clover-kafka", "clover-collector")
NODE_PORT_URL = "http://10.251.0.1:32044"
# What the namespace holds by itself (made by the controllers for every namespace).
OWN = {"ConfigMap/kube-root-ca.crt", "ServiceAccount/default"}


def cloverctl(paths: ClusterPaths, *args: str, check: bool = True,
              timeout: float = 900) -> subprocess.CompletedProcess[str]:  # fmt: skip
    argv = [str(CLOVERCTL), *args, "--kubeconfig", str(paths.kubeconfig)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    print(f"$ cloverctl {' '.join(args)}\n{done.stdout}{done.stderr}", flush=True)
    if check and done.returncode != 0:
        raise AssertionError(f"cloverctl {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done


def namespace_contents(kubectl: Kubectl) -> set[str]:
    kinds = "all,pvc,secret,configmap,serviceaccount,role,rolebinding"
    items = kubectl.json("-n", NAMESPACE, "get", kinds)["items"]
    return {f"{i['kind']}/{i['metadata']['name']}" for i in items}


@pytest.fixture(scope="module")
def loaded(cluster_paths: ClusterPaths, timings: Timings) -> None:
    """The images the systems need, imported into the cluster's containerd."""
    load_images(cluster_paths, timings, IMAGES)


@pytest.fixture(scope="module")
def deployed(cluster_paths: ClusterPaths, kubectl: Kubectl, loaded: None, timings: Timings) -> Iterator[None]:
    try:
        started = time.monotonic()
        cloverctl(cluster_paths, "create", "system", "datastore")
        timings["create system datastore (ready)"] = time.monotonic() - started
        started = time.monotonic()
        cloverctl(cluster_paths, "create", "system", "controller")
        cloverctl(cluster_paths, "create", "system", "controller", "nodeport")
        timings["create system controller + nodeport (ready)"] = time.monotonic() - started
        yield
    finally:
        # Whatever the module left, also when a create or a test failed half-way: later modules start empty.
        for args in (("controller", "nodeport"), ("controller",), ("collector",), ("kafka",), ("datastore",)):
            cloverctl(cluster_paths, "delete", "system", *args, check=False)


def test_dry_run_creates_nothing(cluster_paths: ClusterPaths, kubectl: Kubectl, loaded: None) -> None:
    done = cloverctl(cluster_paths, "create", "system", "datastore", "--dry-run")
    assert "(dry run" in done.stdout
    assert kubectl("-n", NAMESPACE, "get", "statefulset,deployment,secret", "-o", "name", check=False).strip() == ""


def test_every_manifest_passes_the_api_servers_checks_and_pod_security(kubectl: Kubectl) -> None:
    """``kubectl apply -k`` of each directory, dry run on the server: valid, and no warning that a
    pod would violate the namespace's restricted Pod Security."""
    kubectl("apply", "-k", str(K8S / "clover-system"))
    for directory in ("datastore", "kafka", "collector", "controller", "controller/nodeport", "visibility"):
        done = subprocess.run([*kubectl.argv, "apply", "--dry-run=server", "-k", str(K8S / directory)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, (directory, done.stderr)
        assert "Warning" not in done.stderr, (directory, done.stderr)
        assert "(server dry run)" in done.stdout, (directory, done.stdout)


def get_json(url: str, timeout: float = 30) -> tuple[int, object]:
    """GET ``url``; retried for ``timeout`` seconds while refused (kube-proxy writes a new
    Service's rules within a second or so of its creation)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_the_controller_answers_through_the_node_port(deployed: None, kubectl: Kubectl) -> None:
    assert get_json(f"{NODE_PORT_URL}/health") == (200, {"status": "ok", "redis": "ok"})
    # The controller reached Redis by its Service name: the cluster DNS, as in the original.
    env = kubectl.json("-n", NAMESPACE, "get", "deployment", "clover-controller")["spec"]["template"]["spec"]
    assert {"name": "CLOVER_REDIS_URL", "value": "redis://redis.clover-system:6379/0"} in env["containers"][0]["env"]


def test_the_datastore_runs_as_declared(deployed: None, kubectl: Kubectl) -> None:
    cassandra = kubectl.json("-n", NAMESPACE, "get", "pod", "cassandra-0")
    ip = cassandra["status"]["podIP"]
    probes.cql_query((ip,), 9042)  # this machine reaches pods on the bridge
    claim = kubectl.json("-n", NAMESPACE, "get", "pvc", "data-cassandra-0")
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["storageClassName"] == "clover-local"
    for pod in kubectl.json("-n", NAMESPACE, "get", "pods")["items"]:
        spec = pod["spec"]
        assert spec["automountServiceAccountToken"] is False, pod["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["resources"]["limits"] and container["resources"]["requests"]
            assert container.get("readinessProbe"), container["name"]
    # Redis refuses a client without the password from the Secret.
    redis_ip = kubectl.json("-n", NAMESPACE, "get", "pods", "-l", "app=redis")["items"][0]["status"]["podIP"]
    import redis

    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=redis_ip, port=6379, socket_timeout=5).ping()


def cql(ip: str, *statements: str, timeout: float = 120) -> list[tuple[object, ...]]:
    """Run the statements against one node (retried while it is still starting); the last one's rows."""
    from cassandra.cluster import Cluster
    from cassandra.policies import RoundRobinPolicy

    deadline = time.monotonic() + timeout
    while True:
        cluster = Cluster([ip], port=9042, connect_timeout=5, protocol_version=5,
                          load_balancing_policy=RoundRobinPolicy())  # fmt: skip
        try:
            session = cluster.connect()
            rows: list[tuple[object, ...]] = []
            for statement in statements:
                rows = [tuple(r) for r in session.execute(statement, timeout=30)]
            return rows
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
        finally:
            cluster.shutdown()


def test_cassandra_keeps_its_data_when_its_pod_is_deleted(deployed: None, kubectl: Kubectl, timings: Timings) -> None:
    ip = kubectl.json("-n", NAMESPACE, "get", "pod", "cassandra-0")["status"]["podIP"]
    cql(ip, "CREATE KEYSPACE IF NOT EXISTS cluster_test WITH replication = {'class': 'SimpleStrategy', "
            "'replication_factor': 1}",
        "CREATE TABLE IF NOT EXISTS cluster_test.kept (k text PRIMARY KEY, v int)",
        "INSERT INTO cluster_test.kept (k, v) VALUES ('accepted', 42)")  # fmt: skip
    old_uid = kubectl.json("-n", NAMESPACE, "get", "pod", "cassandra-0")["metadata"]["uid"]
    started = time.monotonic()
    kubectl("-n", NAMESPACE, "delete", "pod", "cassandra-0", "--wait=true", timeout=180)
    kubectl("-n", NAMESPACE, "rollout", "status", "statefulset/cassandra", "--timeout=600s", timeout=620)
    kubectl("-n", NAMESPACE, "wait", "--for=condition=Ready", "pod/cassandra-0", "--timeout=600s", timeout=620)
    pod = kubectl.json("-n", NAMESPACE, "get", "pod", "cassandra-0")
    assert pod["metadata"]["uid"] != old_uid
    assert cql(pod["status"]["podIP"], "SELECT k, v FROM cluster_test.kept") == [("accepted", 42)]
    timings["Cassandra pod deleted -> back with its data"] = time.monotonic() - started


def test_the_controller_drives_the_collector_with_kafka_and_cassandra(
    deployed: None, cluster_paths: ClusterPaths, kubectl: Kubectl, timings: Timings
) -> None:
    started = time.monotonic()
    cloverctl(cluster_paths, "create", "system", "kafka")
    cloverctl(cluster_paths, "create", "system", "collector")
    timings["create system kafka + collector (ready)"] = time.monotonic() - started
    status, reply = get_json(f"{NODE_PORT_URL}/collector/status")
    assert status == 200 and isinstance(reply, dict), reply
    encoded = kubectl.json("-n", NAMESPACE, "get", "secret", "clover-controller")["data"]["token"]
    token = base64.b64decode(encoded).decode()
    # A change without the token is refused; with it, the collector makes the keyspace in Cassandra.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{NODE_PORT_URL}/collector/init", timeout=30)
    assert refused.value.code == 401
    asked = urllib.request.Request(f"{NODE_PORT_URL}/collector/init", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(asked, timeout=120) as answer:
        assert answer.status == 200, answer.read()
    ip = kubectl.json("-n", NAMESPACE, "get", "pod", "cassandra-0")["status"]["podIP"]
    tables = cql(ip, "SELECT table_name FROM system_schema.tables WHERE keyspace_name = 'visibility'")
    assert {"traces", "spans", "metrics"} <= {row[0] for row in tables}
    # The broker advertises its pod's address and answers a metadata request there.
    kafka_ip = kubectl.json("-n", NAMESPACE, "get", "pod", "kafka-0")["status"]["podIP"]
    probes.kafka_metadata(f"{kafka_ip}:9092")


def test_get_services_lists_the_node_port(deployed: None, cluster_paths: ClusterPaths) -> None:
    table = cloverctl(cluster_paths, "get", "services").stdout.splitlines()
    row = next(line for line in table if " clover-controller " in f" {line} ")
    assert row.split()[:3] == [NAMESPACE, "clover-controller", "NodePort"]
    assert "80:32044/TCP" in row
    assert any(line.split()[:2] == ["default", "kubernetes"] for line in table)


def test_a_missing_image_is_named(deployed: None, cluster_paths: ClusterPaths) -> None:
    done = cloverctl(cluster_paths, "create", "system", "controller", "-t", "no-such-tag", "--timeout", "120",
                     check=False)  # fmt: skip
    assert done.returncode != 0
    assert "opnfv/clover-controller:no-such-tag" in done.stderr and "make images" in done.stderr, done.stderr
    cloverctl(cluster_paths, "create", "system", "controller")  # back to the built one


def test_no_cluster_is_a_clear_error(cluster_paths: ClusterPaths, tmp_path: Path) -> None:
    config = cluster_paths.kubeconfig.read_text().replace(":6443", ":6999")
    (tmp_path / "kubeconfig").write_text(config)
    done = subprocess.run([str(CLOVERCTL), "get", "services", "--kubeconfig", str(tmp_path / "kubeconfig")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1
    assert "no Kubernetes cluster answers at https://10.251.0.1:6999" in done.stderr, done.stderr


def test_delete_leaves_the_namespace_empty(deployed: None, cluster_paths: ClusterPaths, kubectl: Kubectl,
                                           timings: Timings) -> None:  # fmt: skip
    volumes_before = {p.name for p in cluster_paths.volumes.iterdir()}
    assert len(volumes_before) == 2  # Cassandra's and Kafka's
    started = time.monotonic()
    cloverctl(cluster_paths, "delete", "system", "controller", "nodeport")
    cloverctl(cluster_paths, "delete", "system", "controller")
    cloverctl(cluster_paths, "delete", "system", "collector")
    cloverctl(cluster_paths, "delete", "system", "kafka")
    cloverctl(cluster_paths, "delete", "system", "datastore")
    timings["delete systems (gone)"] = time.monotonic() - started
    assert namespace_contents(kubectl) == OWN
    deadline = time.monotonic() + 60  # the provisioner deletes released volumes every 2 s
    while time.monotonic() < deadline and (kubectl("get", "pv", "-o", "name").strip()
                                           or any(cluster_paths.volumes.iterdir())):  # fmt: skip
        time.sleep(1)
    assert kubectl("get", "pv", "-o", "name").strip() == ""
    assert list(cluster_paths.volumes.iterdir()) == []
