"""k8s/monitoring (Jaeger and Prometheus) and where the collector and Clovisor read them: valid
objects, least privilege, the Services' names and ports the other systems use."""

from __future__ import annotations

import pytest
import yaml

from cloverctl import clover_system, clovisor, monitoring_system

pytestmark = pytest.mark.unit


def test_the_manifests_are_valid_and_least_privileged() -> None:
    import kubernetes_validate  # type: ignore[import-untyped]  # no type information

    docs = clover_system.load(monitoring_system.SYSTEM, tag="7", repo="reg:5000/clover")
    assert [(d["kind"], d["metadata"]["name"], d["metadata"]["namespace"]) for d in docs] == [
        ("Deployment", "jaeger", "clover-system"),
        ("Service", "jaeger", "clover-system"),
        ("Service", "clover-stats", "default"),
        ("ConfigMap", "prometheus", "clover-system"),
        ("Deployment", "prometheus", "clover-system"),
        ("Service", "prometheus", "clover-system"),
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.31", strict=True)
    tokens = {}
    for workload in (d for d in docs if d["kind"] == "Deployment"):
        pod = workload["spec"]["template"]["spec"]
        tokens[workload["metadata"]["name"]] = pod["automountServiceAccountToken"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = pod["containers"]
        assert container["image"] == f"reg:5000/clover/clover-{workload['metadata']['name']}:7"
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                "capabilities": {"drop": ["ALL"]}}  # fmt: skip
        assert set(container["resources"]["requests"]) == set(container["resources"]["limits"]) == {
            "cpu", "memory", "ephemeral-storage"}  # fmt: skip
        assert container["readinessProbe"] and container["livenessProbe"]
    assert tokens == {"jaeger": False, "prometheus": False}  # neither talks to the API


def test_the_services_are_where_the_chain_the_collector_and_clovisor_send() -> None:
    docs = clover_system.load(monitoring_system.SYSTEM)
    ports = {(d["metadata"]["name"], p["port"], p.get("protocol", "TCP")) for d in docs if d["kind"] == "Service"
             for p in d["spec"]["ports"]}  # fmt: skip
    assert ports == {("jaeger", 4317, "TCP"), ("jaeger", 4318, "TCP"), ("jaeger", 14268, "TCP"),
                     ("jaeger", 6831, "UDP"), ("jaeger", 16686, "TCP"), ("jaeger", 16685, "TCP"),
                     ("prometheus", 9090, "TCP"), ("clover-stats", 15090, "TCP")}  # fmt: skip
    (stats,) = [d for d in docs if d["metadata"]["name"] == "clover-stats"]
    assert stats["spec"]["clusterIP"] == "None"  # headless: one DNS record per ready pod
    assert stats["spec"]["selector"] == {"app.kubernetes.io/part-of": "clover"}
    assert stats["spec"]["ports"][0]["targetPort"] == "stats"  # the sample chain's pods' port name
    (collector,) = [d for d in clover_system.load(clover_system.COLLECTOR) if d["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in collector["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CLOVER_JAEGER_URL"] == "http://jaeger.clover-system:16686"
    assert env["CLOVER_PROMETHEUS_URL"] == "http://prometheus.clover-system:9090"
    agent = clovisor.load_manifests()[-1]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "CLOVER_CLOVISOR_JAEGER_COLLECTOR", "value": "jaeger.clover-system:14268"} in agent["env"]
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    scrape = yaml.safe_load(config["data"]["prometheus.yml"])["scrape_configs"]
    assert [(job["job_name"], job.get("dns_sd_configs")) for job in scrape] == [
        ("prometheus", None),
        ("clover-sdc", [{"names": ["clover-stats.default.svc.cluster.local"], "type": "A", "port": 15090,
                         "refresh_interval": "5s"}]),
    ]  # fmt: skip
