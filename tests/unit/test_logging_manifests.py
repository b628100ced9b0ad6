"""k8s/logging: valid objects in namespace logging, and the shipper's configuration there is the
local stack's template (stack/conf/log-shipper.yaml) with the cluster's values."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import yaml

from cloverctl import clover_system, logging_system
from stack.parts import render

pytestmark = pytest.mark.unit
K8S = Path(__file__).resolve().parents[2] / "k8s" / "logging"


def documents() -> list[dict[str, object]]:
    found = []
    for name in yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]:
        found += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return found


def test_the_manifests_are_valid_objects_in_the_logging_namespace() -> None:
    import kubernetes_validate  # type: ignore[import-untyped]  # no type information

    docs = documents()
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [  # type: ignore[index]  # yaml mappings
        ("Namespace", "logging"), ("StatefulSet", "log-store"), ("Service", "log-store"),
        ("ConfigMap", "log-shipper"), ("DaemonSet", "log-shipper"),
    ]  # fmt: skip
    for doc in docs:
        kubernetes_validate.validate(doc, "1.31", strict=True)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "logging"  # type: ignore[index]  # yaml mappings


def test_the_shippers_configuration_is_the_local_template_reading_the_nodes_container_logs(tmp_path: Path) -> None:
    (config_map,) = [d for d in documents() if d["kind"] == "ConfigMap"]
    in_cluster = yaml.safe_load(config_map["data"]["log-shipper.yaml"])  # type: ignore[index]  # yaml mappings
    rendered = render("log-shipper.yaml", tmp_path / "shipper.yaml", storage_dir="/var/lib/clover-log-shipper",
                      access_log_dir="/unused", state_dir="/unused", stream="clover", store_url="http://log-store.logging:9428",
                      bind_host="0.0.0.0", metrics_port=8889)  # fmt: skip
    local = yaml.safe_load(rendered.read_text())
    local["extensions"]["file_storage"].pop("create_directory")  # the hostPath is made by the kubelet
    receiver = in_cluster["receivers"]["file_log"]
    container, only_entries, *parsing = receiver.pop("operators")
    assert container == {"type": "container", "add_metadata_from_filepath": True}
    assert only_entries["type"] == "filter"
    assert receiver.pop("include") == ["/var/log/pods/default_*/*/*.log", "/var/log/pods/clover-gateway_*/*/*.log"]
    assert receiver.pop("include_file_path") is True
    local["receivers"].pop("file_log/processes")  # the parts of the local stack
    local["service"]["pipelines"]["logs"]["receivers"].remove("file_log/processes")
    local_receiver = local["receivers"]["file_log"]
    assert parsing == local_receiver.pop("operators")
    local_receiver.pop("include")
    assert in_cluster == local


def test_the_shipper_reads_the_pod_logs_dir_it_is_given() -> None:
    docs = logging_system.load_manifests(pod_logs_dir="/srv/kubelet/pod-logs")
    (shipper,) = [d for d in docs if d["kind"] == "DaemonSet"]
    volumes = {v["name"]: v for v in shipper["spec"]["template"]["spec"]["volumes"]}
    assert volumes["pod-logs"]["hostPath"] == {"path": "/srv/kubelet/pod-logs", "type": "Directory"}
    with pytest.raises(click.BadParameter, match="'pod-logs' is not an absolute path"):
        logging_system.load_manifests(pod_logs_dir="pod-logs")


def test_create_system_logging_names_the_images_of_the_chosen_repository_and_tag() -> None:
    docs = clover_system.load(logging_system.SYSTEM, tag="7", repo="reg:5000/clover")
    images = {d["metadata"]["name"]: [c["image"] for c in d["spec"]["template"]["spec"]["containers"]]
              for d in docs if d["kind"] in ("StatefulSet", "DaemonSet")}  # fmt: skip
    assert images == {"log-store": ["reg:5000/clover/clover-log-store:7"],
                      "log-shipper": ["reg:5000/clover/clover-log-shipper:7"]}  # fmt: skip
