"""The validation service in a cluster: k8s/validation, ``cloverctl create|delete system
validation`` against a fake API server, slave discovery through DNS, the slave pod's process."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from clover.config import Config
from cloverctl import clovisor, system, validation_system
from validation import slave
from validation.jmeter import JMeter
from validation.server import ServiceError, ValidationService, resolve_slaves

KINDS = ["Deployment", "Service", "Deployment", "Service"]
NAMES = ["clover-jmeter-slave", "clover-jmeter-slave", "clover-jmeter-master", "clover-jmeter-master"]


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def _env(doc: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _pod(doc)["containers"][0]["env"]}


def test_the_manifests_are_valid_and_least_privileged() -> None:
    import kubernetes_validate

    docs = validation_system.load_manifests()
    assert ([d["kind"] for d in docs], [d["metadata"]["name"] for d in docs]) == (KINDS, NAMES)
    for doc in docs:
        kubernetes_validate.validate(doc, "1.31", strict=True)
        assert doc["metadata"]["namespace"] == "default"
    for doc in docs[0::2]:
        pod = _pod(doc)
        (container,) = pod["containers"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory", "ephemeral-storage"}
        assert set(container) >= {"readinessProbe", "livenessProbe"}
        writable = {v["name"] for v in pod["volumes"] if set(v["emptyDir"]) == {"sizeLimit"}}
        assert {m["name"] for m in container["volumeMounts"]} == writable == {"state", "tmp"}
        assert _env(doc)["CLOVER_STATE_DIR"] == "/var/lib/clover"
        assert _env(doc)["CLOVER_JMETER_RMI_HOST"] == "$(POD_IP)"
    slave_deployment, slave_service, master, master_service = docs
    assert slave_deployment["spec"]["replicas"] == 3
    assert slave_service["spec"]["clusterIP"] == "None"
    assert slave_service["spec"]["ports"] == [{"name": "rmi", "port": 1099, "targetPort": "rmi"}]
    assert _env(slave_deployment)["CLOVER_JMETER_RMI_PORT"] == "1099"
    assert _pod(slave_deployment)["containers"][0]["image"] == "opnfv/clover-jmeter-slave:latest"
    assert master["spec"]["replicas"] == 1
    assert master_service["spec"]["ports"] == [{"name": "grpc", "port": 50054, "targetPort": "grpc"}]
    env = _env(master)
    assert env["CLOVER_VALIDATION_GRPC"] == "[::]:50054"
    assert env["CLOVER_JMETER_SLAVES"] == "clover-jmeter-slave.$(POD_NAMESPACE).svc.cluster.local:1099"
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # $(VAR) is only expanded from variables defined before it.
    names = list(env)
    assert names.index("POD_NAMESPACE") < names.index("CLOVER_JMETER_SLAVES")
    assert names.index("POD_IP") < names.index("CLOVER_JMETER_RMI_HOST")


def test_tag_and_repository_overrides() -> None:
    docs = validation_system.load_manifests(tag="opnfv-7.0.0", repo="reg:5000/clover")
    assert {d["metadata"]["namespace"] for d in docs} == {"default"}
    assert [_pod(d)["containers"][0]["image"] for d in docs[0::2]] == [
        "reg:5000/clover/clover-jmeter-slave:opnfv-7.0.0",
        "reg:5000/clover/clover-jmeter-master:opnfv-7.0.0",
    ]
    assert system.with_tag("reg:5000/a/b", "2") == "reg:5000/a/b:2"
    assert system.with_tag("reg:5000/a/b:1", "2") == "reg:5000/a/b:2"
    assert system.with_tag("b", "2") == "b:2"
    clovisor_image = _pod(clovisor.load_manifests(tag="9")[-1])["containers"][0]["image"]
    assert clovisor_image == "opnfv/clover-clovisor:9"


class FakeCluster:
    """Every API group at once, holding objects: create answers 409 for an object that exists,
    delete 404 for one that does not."""

    def __init__(self) -> None:
        self.objects: set[tuple[str, str, str]] = set()
        self.calls: list[tuple[str, str, str, dict[str, Any]]] = []

    def __getattr__(self, method: str) -> Any:
        from kubernetes.client.exceptions import ApiException

        verb, _, noun = method.partition("_")

        def call(*args: Any, **kwargs: Any) -> None:
            body = args[-1] if isinstance(args[-1], dict) else None
            name = body["metadata"]["name"] if body else args[0]
            namespace = body["metadata"]["namespace"] if body else args[1]
            self.calls.append((method, namespace, name, kwargs))
            key = (noun, namespace, name)
            if verb == "create":
                if key in self.objects:
                    raise ApiException(status=409, reason="Conflict")
                if not kwargs.get("dry_run"):
                    self.objects.add(key)
            elif verb == "delete":
                if key not in self.objects:
                    raise ApiException(status=404, reason="Not Found")
                self.objects.remove(key)

        return call


def test_create_again_and_delete_against_a_fake_api_server() -> None:
    cluster = FakeCluster()
    apis = {"core": cluster, "rbac": cluster, "apps": cluster}
    docs = validation_system.load_manifests()
    for doc in docs:
        doc["metadata"]["namespace"] = "load"
    objects = [f"{kind}/{name}" for kind, name in zip(KINDS, NAMES, strict=True)]

    assert system.apply(apis, docs, dry_run=True) == [f"{o} created" for o in objects]
    assert [c[3] for c in cluster.calls] == [{"dry_run": "All"}] * 4 and not cluster.objects
    cluster.calls.clear()

    assert system.apply(apis, docs) == [f"{o} created" for o in objects]
    assert [c[:3] for c in cluster.calls] == [
        ("create_namespaced_deployment", "load", "clover-jmeter-slave"),
        ("create_namespaced_service", "load", "clover-jmeter-slave"),
        ("create_namespaced_deployment", "load", "clover-jmeter-master"),
        ("create_namespaced_service", "load", "clover-jmeter-master"),
    ]
    cluster.calls.clear()

    assert system.apply(apis, docs) == [f"{o} configured" for o in objects]
    assert [c[0] for c in cluster.calls] == [
        "create_namespaced_deployment",
        "replace_namespaced_deployment",
        "create_namespaced_service",
        "patch_namespaced_service",  # a Service cannot be replaced without its live clusterIP
        "create_namespaced_deployment",
        "replace_namespaced_deployment",
        "create_namespaced_service",
        "patch_namespaced_service",
    ]
    cluster.calls.clear()

    assert system.delete(apis, docs) == [f"{o} deleted" for o in reversed(objects)]
    assert [c[:3] for c in cluster.calls] == [
        ("delete_namespaced_service", "load", "clover-jmeter-master"),
        ("delete_namespaced_deployment", "load", "clover-jmeter-master"),
        ("delete_namespaced_service", "load", "clover-jmeter-slave"),
        ("delete_namespaced_deployment", "load", "clover-jmeter-slave"),
    ]
    assert not cluster.objects
    assert system.delete(apis, docs) == [f"{o} not found" for o in reversed(objects)]


def test_an_unknown_kind_is_refused_before_anything_is_applied() -> None:
    import click

    cluster = FakeCluster()
    docs = [*validation_system.load_manifests(), {"kind": "Secret", "metadata": {"name": "x"}}]
    with pytest.raises(click.ClickException, match="kind 'Secret' is not one cloverctl can apply"):
        system.apply({"core": cluster, "apps": cluster}, docs)
    assert cluster.calls == []


SLAVES = "clover-jmeter-slave.default.svc.cluster.local"
ANSWERS = {
    SLAVES: ["10.1.0.12", "10.1.0.9", "fd00::2", "10.1.0.12", "fd00::1"],
    "one": ["10.1.0.9"],
}


class Dns:
    """socket.getaddrinfo answering from ``answers`` (each address once per socket type, as glibc
    does); ``asked`` records the lookups."""

    def __init__(self) -> None:
        self.answers = {name: list(addresses) for name, addresses in ANSWERS.items()}
        self.asked: list[tuple[str, int]] = []


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Dns:
    fake = Dns()

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        fake.asked.append((host, port))
        if host not in fake.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        infos = []
        for address in fake.answers[host]:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
            infos += [(family, kind, 6, "", sockaddr) for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM)]
        return infos

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return fake


def test_a_name_expands_to_every_address_it_resolves_to(dns: Dns) -> None:
    assert resolve_slaves([f"{SLAVES}:1099"], "CLOVER_JMETER_SLAVES") == [
        "10.1.0.9:1099",
        "10.1.0.12:1099",
        "[fd00::1]:1099",
        "[fd00::2]:1099",
    ]
    assert resolve_slaves([" one:2000 ", "one", "10.1.0.9:1099", "10.0.0.5", "[fd00::7]:1099", ""], "slave_ips") == [
        "10.1.0.9:2000",
        "10.1.0.9:1099",
        "10.0.0.5",
        "[fd00::7]:1099",
    ]
    assert dns.asked == [(SLAVES, 1099), ("one", 2000), ("one", 1099)]


def test_a_name_that_does_not_resolve_is_named(dns: Dns) -> None:
    with pytest.raises(ServiceError) as exc:
        resolve_slaves(["10.0.0.5", "nowhere:1099"], "CLOVER_JMETER_SLAVES")
    assert exc.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert str(exc.value) == (
        "Failed to start test: CLOVER_JMETER_SLAVES: JMeter server 'nowhere' does not resolve "
        "([Errno -2] Name or service not known)"
    )


def _service(tmp_path: Path, slaves: tuple[str, ...]) -> ValidationService:
    cfg = replace(Config.from_env({}), state_dir=tmp_path / "state", jmeter_slaves=slaves)
    svc = ValidationService(cfg, tmp_path / "work", resolve=lambda host: host)
    (svc.plans / "test.jmx").write_text("<jmeterTestPlan/>")
    return svc


def test_more_slaves_than_resolve_is_refused_with_the_count(dns: Dns, tmp_path: Path) -> None:
    svc = _service(tmp_path, (f"{SLAVES}:1099",))
    with pytest.raises(ServiceError) as exc:
        svc.start("test.jmx", num_slaves=5)
    assert (exc.value.code, str(exc.value)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        f"Failed to start test: 5 slaves requested but only 4 found (CLOVER_JMETER_SLAVES={SLAVES}:1099)",
    )
    with pytest.raises(ServiceError) as exc:
        svc.start("test.jmx", num_slaves=2, slave_ips=["one", "nowhere"])
    assert str(exc.value) == (
        "Failed to start test: slave_ips: JMeter server 'nowhere' does not resolve "
        "([Errno -2] Name or service not known)"
    )
    # Resolved at each StartTest: a scaled-up Deployment is seen without a restart.
    dns.answers[SLAVES].append("10.1.0.30")
    assert svc._slaves(5, []) == (
        ["10.1.0.9:1099", "10.1.0.12:1099", "10.1.0.30:1099", "[fd00::1]:1099", "[fd00::2]:1099"],
        0,
    )


def test_the_slave_pod_runs_a_jmeter_server_named_by_its_pod_ip(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    found: list[Path] = []

    def find(home: Path, java_home: str | None = None) -> JMeter:
        found.append(home)
        return JMeter(home, Path("/usr/bin/java"))

    monkeypatch.setattr(JMeter, "find", staticmethod(find))
    env = {
        "CLOVER_JMETER_HOME": "/opt/jmeter",
        "CLOVER_STATE_DIR": str(tmp_path),
        "CLOVER_JMETER_RMI_HOST": "10.1.0.9",
    }
    argv = slave.server_argv(Config.from_env(env))
    assert found == [Path("/opt/jmeter")] and (tmp_path / "jmeter-server").is_dir()
    assert argv[0] == "/usr/bin/java" and "-s" in argv
    for arg in ("-Djava.rmi.server.hostname=10.1.0.9", "-Dserver_port=1099", "-Jserver.rmi.localport=1099",
                "-Jserver.rmi.ssl.disable=true"):  # fmt: skip
        assert arg in argv
    master = JMeter(Path("/opt/jmeter"), Path("/usr/bin/java")).run_command(
        Path("t.jmx"), Path("d.jtl"), Path("j.log"), tmp_path, remote_hosts=["10.1.0.9:1099"], rmi_host="10.1.0.7"
    )
    assert "-Djava.rmi.server.hostname=10.1.0.7" in master
