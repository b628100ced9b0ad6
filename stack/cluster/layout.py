"""Where the local cluster keeps its files, and the addresses it derives from the settings."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from clover.config import Config

NODE_NAME = "clover-node"
CLUSTER_DOMAIN = "cluster.local"
# The pods' bridge; the bridge plugin names the host ends of pod veths veth<hex>.
BRIDGE = "clover-br0"

# Control-plane ports: every one listens on 127.0.0.1 or the node address only.
API_PORT = 6443
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
ETCD_METRICS_PORT = 2381
KUBELET_HEALTH_PORT = 10248
KUBE_PROXY_METRICS_PORT = 10249
KUBELET_PORT = 10250
KUBE_PROXY_HEALTH_PORT = 10256
CONTROLLER_MANAGER_PORT = 10257
SCHEDULER_PORT = 10259


@dataclass(frozen=True)
class Network:
    """The node address, the pod and Service networks, and the addresses taken from them."""

    node_ip: str
    pod_cidr: str
    service_cidr: str

    @classmethod
    def of(cls, cfg: Config) -> Network:
        return cls(cfg.cluster_node_ip, cfg.cluster_pod_cidr, cfg.cluster_service_cidr)

    @property
    def api_service_ip(self) -> str:
        """The ``kubernetes.default`` Service: the first address of the Service network."""
        return str(ipaddress.IPv4Network(self.service_cidr)[1])

    @property
    def dns_ip(self) -> str:
        """The cluster DNS Service (``kube-dns.kube-system``): the tenth address, as kubeadm does."""
        return str(ipaddress.IPv4Network(self.service_cidr)[10])

    @property
    def api_url(self) -> str:
        return f"https://{self.node_ip}:{API_PORT}"


@dataclass(frozen=True)
class ClusterPaths:
    """``<state dir>/cluster``: certificates, kubeconfigs, the parts' directories, host records."""

    root: Path
    kubeconfig: Path  # the administrator's: what kubectl and cloverctl use
    bin: Path  # links to the built binaries (kubectl among them)
    pki: Path
    addons: Path  # manifests the cluster-dns part keeps applied
    host_record: Path  # what the host setup changed on this machine, for its teardown
    containerd_root: Path
    containerd_state: Path
    containerd_socket: Path
    cni_conf_dir: Path
    ipam_dir: Path
    kubelet_root: Path
    pod_logs: Path  # the kubelet's podLogsDir (the containers' logs, which the log shipper reads)
    volumes: Path  # persistent volumes (stack/cluster/storage.py): kept by down, like etcd's data

    @classmethod
    def at(cls, root: Path) -> ClusterPaths:
        containerd = root / "containerd"
        return cls(
            root=root,
            kubeconfig=root / "kubeconfig",
            bin=root / "bin",
            pki=root / "pki",
            addons=root / "addons",
            host_record=root / "host.json",
            containerd_root=containerd / "root",
            containerd_state=containerd / "run",
            containerd_socket=containerd / "run" / "containerd.sock",
            cni_conf_dir=containerd / "net.d",
            ipam_dir=containerd / "ipam",
            kubelet_root=root / "kubelet" / "root",
            pod_logs=root / "kubelet" / "pod-logs",
            volumes=root / "volumes",
        )

    @classmethod
    def of(cls, cfg: Config) -> ClusterPaths:
        return cls.at(cfg.state_dir / "cluster")


def kubernetes_cache(cfg: Config) -> Path:
    """The build cache: Go module and build caches, sources, binaries and image archives."""
    return cfg.stack_cache / "k8s"
