"""The node and the control plane."""

from __future__ import annotations

from stack.cluster import versions
from stack.cluster.layout import NODE_NAME, ClusterPaths
from stack.launcher import Launcher
from tests.cluster.conftest import Kubectl


def test_the_node_is_ready_with_the_built_version(kubectl: Kubectl) -> None:
    node = kubectl.json("get", "node", NODE_NAME)
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert node["status"]["nodeInfo"]["kubeletVersion"] == versions.KUBERNETES
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.6.")
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == "10.251.0.1"


def test_every_part_is_healthy(cluster: Launcher) -> None:
    rows = cluster.status(["cluster"])
    assert [r.name for r in rows if r.health != "healthy"] == []
    assert [r.name for r in rows] == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                                      "containerd", "kubelet", "kube-proxy", "cluster-dns"]  # fmt: skip


def test_the_kubeconfig_and_kubectl_are_where_the_readme_says(cluster_paths: ClusterPaths, kubectl: Kubectl) -> None:
    assert (cluster_paths.root / "kubeconfig") == cluster_paths.kubeconfig
    assert (cluster_paths.root / "bin" / "kubectl").resolve().is_file()
    client = kubectl.json("version", "--client")["clientVersion"]["gitVersion"]
    assert client == versions.KUBERNETES


def test_the_images_were_imported_not_pulled(kubectl: Kubectl) -> None:
    node = kubectl.json("get", "node", NODE_NAME)
    names = {name for image in node["status"].get("images", []) for name in image["names"]}
    assert {versions.PAUSE_IMAGE, versions.COREDNS_IMAGE, versions.BUSYBOX_IMAGE} <= names
