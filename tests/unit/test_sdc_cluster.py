"""The sample chain as Kubernetes pods: the manifests of k8s/sdc, the pods' cluster mode (their
own address, stats on every address) and the controller addressing the chain's Services in
their namespace (CLOVER_SDC_NAMESPACE)."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from clover import pods
from clover.config import Config, ConfigError
from cloverctl import clover_system, sdc_system
from sdc import grpc_client, topology
from sdc.names import in_namespace
from stack.images.catalogue import images

K8S = Path(__file__).resolve().parents[2] / "k8s"
# The original's chain (the pods k8s/sdc runs).
CHAIN = ("proxy-access-control", "http-lb-v1", "http-lb-v2", *(f"clover-server{i}" for i in range(1, 6)), "snort-ids")
IMAGE_OF = {"proxy": "clover-ns-nginx-proxy", "lb": "clover-ns-nginx-lb", "server": "clover-ns-nginx-server",
            "ids": "clover-ns-snort-ids"}  # fmt: skip


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = container
    return result


def _env(doc: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(doc)["env"]}


def test_every_pod_of_the_chain_is_a_least_privileged_deployment_of_its_image() -> None:
    docs = clover_system.load(sdc_system.SYSTEM)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert sorted(deployments) == sorted(CHAIN)
    built = {image.name for image in images()}
    for name, doc in deployments.items():
        spec = topology.spec(name)
        pod = doc["spec"]["template"]["spec"]
        container = _container(doc)
        assert doc["metadata"]["namespace"] == topology.NAMESPACE
        assert doc["spec"]["template"]["metadata"]["labels"] == {**spec.labels, "app.kubernetes.io/part-of": "clover"}
        assert container["image"] == f"opnfv/{IMAGE_OF[spec.kind]}:latest" and IMAGE_OF[spec.kind] in built
        assert container["args"] == [name]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                "capabilities": {"drop": ["ALL"]}}  # fmt: skip
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory", "ephemeral-storage"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "stats"}
        stats = {p["name"]: p["containerPort"] for p in container["ports"]}["stats"]
        assert stats == Config().sdc_stats_port
        env = _env(doc)
        assert env["CLOVER_SDC_MODE"] == "cluster"
        assert env["CLOVER_OTLP_HTTP_URL"] == "http://jaeger.clover-system:4318"
        # Only the pods that use Redis get its password.
        uses_redis = spec.kind in (topology.PROXY, topology.IDS)
        assert ("CLOVER_REDIS_PASSWORD" in env) == uses_redis
        if uses_redis:
            assert env["CLOVER_REDIS_PASSWORD"] == {"secretKeyRef": {"name": "clover-redis", "key": "password"}}


def test_the_manifests_are_valid_kubernetes_objects() -> None:
    import kubernetes_validate  # type: ignore[import-untyped]  # no type information

    for doc in clover_system.load(sdc_system.SYSTEM):
        kubernetes_validate.validate(doc, "1.31", strict=True)


def test_the_services_name_what_the_pods_and_the_controller_dial() -> None:
    docs = clover_system.load(sdc_system.SYSTEM)
    services = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Service"}
    assert sorted(services) == sorted({topology.spec(name).service for name in CHAIN} | {"http-lb-v1", "http-lb-v2"})
    # The proxy resolves http-lb to both versions' pods and takes them in turn.
    assert services["http-lb"]["clusterIP"] == "None"
    assert services["http-lb"]["selector"] == {"app": "http-lb"}
    for version in ("v1", "v2"):
        assert services[f"http-lb-{version}"]["selector"] == {"app": "http-lb", "version": version}
    # The proxy's mirror goes to snort-ids:80; the pod, without root, listens on 8080.
    ids = {p["name"]: p for p in services["snort-ids"]["ports"]}
    assert (ids["http"]["port"], ids["grpc"]["port"]) == (80, topology.IDS_GRPC_PORT)
    (ids_pod,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "snort-ids"]
    ports = {p["name"]: p["containerPort"] for p in _container(ids_pod)["ports"]}
    assert ports["http"] == topology.IDS_HTTP_PORT_UNPRIVILEGED
    for name in ("proxy-access-control", "http-lb-v2", "clover-server4"):
        assert {p["name"]: p["port"] for p in services[name]["ports"]} == {"http": 9180, "grpc": topology.GRPC_PORT}


def test_the_controller_addresses_the_chain_in_default() -> None:
    (controller,) = [d for d in clover_system.load(clover_system.CONTROLLER) if d["kind"] == "Deployment"]
    assert _env(controller)["CLOVER_SDC_NAMESPACE"] == "default"


def test_a_short_name_goes_to_the_chains_namespace(tmp_path: Path) -> None:
    cfg = replace(Config.from_env({"CLOVER_SDC_NAMESPACE": "default"}), state_dir=tmp_path)
    assert in_namespace(cfg, "snort-ids") == "snort-ids.default"
    assert in_namespace(cfg, "http-lb-v2.default") == "http-lb-v2.default"
    assert in_namespace(cfg, "10.0.0.7") == "10.0.0.7"
    assert grpc_client.endpoint(cfg, "snort-ids", topology.IDS_GRPC_PORT).address == "snort-ids.default:50052"
    # A pod of the local registry is dialled at its address, as before.
    pods.register(cfg, pods.LocalPod("snort-ids", "snort-ids", "127.177.0.30", {"grpc": 50052}))
    assert in_namespace(cfg, "snort-ids") == "snort-ids"
    assert grpc_client.endpoint(cfg, "snort-ids", topology.IDS_GRPC_PORT).address == "127.177.0.30:50052"
    # Without the setting a name is dialled as given.
    plain = replace(cfg, sdc_namespace=None, state_dir=tmp_path / "empty")
    assert in_namespace(plain, "proxy-access-control") == "proxy-access-control"


def test_a_bad_namespace_and_the_cluster_mode_are_read() -> None:
    with pytest.raises(ConfigError, match="CLOVER_SDC_NAMESPACE='Default!' is not a Kubernetes namespace name"):
        Config.from_env({"CLOVER_SDC_NAMESPACE": "Default!"})
    cfg = Config.from_env({"CLOVER_SDC_MODE": "cluster"})
    assert topology.mode(cfg) == "cluster"
    assert {topology.stats_port(cfg, name) for name in CHAIN} == {cfg.sdc_stats_port}
    assert topology.stats_host(cfg) == "0.0.0.0"
    assert topology.pod_ip(cfg, "clover-server1") == socket.gethostbyname(socket.gethostname())
    local = Config.from_env({"CLOVER_SDC_MODE": "loopback"})
    assert (topology.stats_host(local), topology.pod_ip(local, "clover-server1")) == ("127.0.0.1", "127.177.0.21")
    assert topology.stats_port(local, "clover-server1") == local.sdc_stats_port + 3
