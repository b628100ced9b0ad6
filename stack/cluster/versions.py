"""Every pinned version of the local cluster (etcd's and CoreDNS's are in ``go/*/go.mod``)."""

from __future__ import annotations

KUBERNETES = "v1.34.4"
# The k8s.io/* staging modules published alongside KUBERNETES.
KUBERNETES_STAGING = "v0.34.4"
# Staging modules the release's go.mod requires but whose versions the proxy does not serve;
# no binary built here imports them.
KUBERNETES_UNUSED = ("k8s.io/sample-apiserver", "k8s.io/sample-cli-plugin", "k8s.io/sample-controller")
BINARIES = ("kube-apiserver", "kubectl", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
ETCD = "v3.6.16"
COREDNS = "v1.14.7"

# Debian bookworm packages the node runs on (their daemons are started by the parts, not by Debian).
DEBIAN_PACKAGES = (
    "containerd", "runc", "containernetworking-plugins", "iptables", "conntrack", "socat", "ethtool",
    "busybox-static", "nftables",
)  # fmt: skip

# What the node uses from them.
DEBIAN_FILES = (
    "/usr/bin/containerd", "/usr/bin/ctr", "/usr/bin/containerd-shim-runc-v2", "/usr/sbin/runc",
    "/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/portmap", "/usr/sbin/iptables",
    "/usr/sbin/conntrack", "/bin/busybox", "/usr/sbin/nft",
)  # fmt: skip

# Images made here, imported into containerd; pods use them with imagePullPolicy: Never.
REGISTRY = "clover.local"
PAUSE_IMAGE = f"{REGISTRY}/pause:{KUBERNETES}"
COREDNS_IMAGE = f"{REGISTRY}/coredns:{COREDNS}"
BUSYBOX_IMAGE = f"{REGISTRY}/busybox:1.35.0"
IMAGES = (PAUSE_IMAGE, COREDNS_IMAGE, BUSYBOX_IMAGE)
