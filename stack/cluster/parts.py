"""The local cluster's processes as parts of the local stack (group ``cluster``).

Start order: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet,
kube-proxy, cluster-dns (CoreDNS as a Deployment and the default StorageClass, kept applied by a
small process that also provisions persistent volumes: ``storage.py``). Every part
keeps its files in ``<state dir>/cluster/<part>/``; ``host.ClusterHost`` builds the binaries and
sets up the machine before the first part starts and undoes it after the last one stops.
"""

from __future__ import annotations

import shutil
import string
import sys
from collections.abc import Callable
from pathlib import Path

from clover.config import Config
from stack import probes
from stack.cluster import containers, versions
from stack.cluster import probes as cluster_probes
from stack.cluster.build import Build
from stack.cluster.host import ClusterHost
from stack.cluster.layout import (
    API_PORT,
    CLUSTER_DOMAIN,
    CONTROLLER_MANAGER_PORT,
    ETCD_CLIENT_PORT,
    ETCD_METRICS_PORT,
    ETCD_PEER_PORT,
    KUBE_PROXY_HEALTH_PORT,
    KUBE_PROXY_METRICS_PORT,
    KUBELET_HEALTH_PORT,
    KUBELET_PORT,
    NODE_NAME,
    SCHEDULER_PORT,
    ClusterPaths,
    Network,
)
from stack.parts import Launch, Part, PartDirs

GROUP = "cluster"
CONF_DIR = Path(__file__).resolve().parent / "conf"
CNI_BIN_DIR = Path("/usr/lib/cni")
ETCD_URL = f"http://127.0.0.1:{ETCD_CLIENT_PORT}"


def render(template: str, target: Path, **values: object) -> Path:
    """Write ``stack/cluster/conf/<template>`` to ``target`` with ``$name`` placeholders filled."""
    text = string.Template((CONF_DIR / template).read_text()).substitute({k: str(v) for k, v in values.items()})
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def cluster_parts(cfg: Config) -> list[Part]:
    """The parts of the local cluster, in start order."""
    paths, net, build = ClusterPaths.of(cfg), Network.of(cfg), Build(cfg)
    host = ClusterHost(cfg)
    pki = paths.pki
    ca = pki / "ca.crt"
    admin = (pki / "admin.crt", pki / "admin.key")

    def binary(name: str) -> str:
        return str(build.binary(name))

    def part(name: str, ports: dict[str, int], health: str, probe: Callable[[], None],
             prepare: Callable[[PartDirs], Launch], ready_before_next: bool = False,
             startup_timeout: float = 60.0, before_stop: Callable[[], None] | None = None) -> Part:  # fmt: skip
        return Part(name=name, ports=ports, health=health, probe=probe, prepare=prepare, home=f"cluster/{name}",
                    host_setup=host, ready_before_next=ready_before_next, startup_timeout=startup_timeout,
                    before_stop=before_stop)  # fmt: skip

    def etcd(dirs: PartDirs) -> Launch:
        dirs.data.mkdir(parents=True, exist_ok=True)
        dirs.data.chmod(0o700)
        peer = f"http://127.0.0.1:{ETCD_PEER_PORT}"
        return Launch([binary("etcd"), "--name=clover", f"--data-dir={dirs.data}",
                       f"--listen-client-urls={ETCD_URL}", f"--advertise-client-urls={ETCD_URL}",
                       f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                       f"--initial-cluster=clover={peer}", f"--listen-metrics-urls=http://127.0.0.1:{ETCD_METRICS_PORT}",
                       "--log-level=warn", "--quota-backend-bytes=2147483648"])  # fmt: skip

    def apiserver(dirs: PartDirs) -> Launch:
        return Launch([binary("kube-apiserver"), f"--etcd-servers={ETCD_URL}",
                       f"--bind-address={net.node_ip}", f"--advertise-address={net.node_ip}",
                       f"--secure-port={API_PORT}", f"--cert-dir={dirs.root}",
                       f"--service-cluster-ip-range={net.service_cidr}", "--authorization-mode=Node,RBAC",
                       "--enable-admission-plugins=NodeRestriction", "--allow-privileged=true",
                       f"--client-ca-file={ca}", f"--tls-cert-file={pki / 'kube-apiserver.crt'}",
                       f"--tls-private-key-file={pki / 'kube-apiserver.key'}",
                       f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                       f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                       f"--kubelet-certificate-authority={ca}", "--kubelet-preferred-address-types=InternalIP",
                       f"--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
                       f"--service-account-key-file={pki / 'sa.pub'}",
                       f"--service-account-signing-key-file={pki / 'sa.key'}",
                       "--profiling=false", "--event-ttl=1h"])  # fmt: skip

    def controller_manager(dirs: PartDirs) -> Launch:
        kubeconfig = pki / "kube-controller-manager.kubeconfig"
        return Launch([binary("kube-controller-manager"), f"--kubeconfig={kubeconfig}",
                       f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
                       "--bind-address=127.0.0.1", f"--secure-port={CONTROLLER_MANAGER_PORT}",
                       f"--cert-dir={dirs.root}", "--leader-elect=false", "--use-service-account-credentials=true",
                       f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={ca}",
                       f"--cluster-signing-cert-file={ca}", f"--cluster-signing-key-file={pki / 'ca.key'}",
                       f"--cluster-cidr={net.pod_cidr}", f"--service-cluster-ip-range={net.service_cidr}",
                       "--profiling=false"])  # fmt: skip

    def scheduler(dirs: PartDirs) -> Launch:
        kubeconfig = pki / "kube-scheduler.kubeconfig"
        return Launch([binary("kube-scheduler"), f"--kubeconfig={kubeconfig}",
                       f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
                       "--bind-address=127.0.0.1", f"--secure-port={SCHEDULER_PORT}", f"--cert-dir={dirs.root}",
                       "--leader-elect=false", "--profiling=false"])  # fmt: skip

    def containerd(dirs: PartDirs) -> Launch:
        cni = render("cni.conflist", paths.cni_conf_dir / "10-clover.conflist", bridge=host.bridge,
                     ipam_dir=paths.ipam_dir, pod_cidr=net.pod_cidr)  # fmt: skip
        conf = render("containerd.toml", dirs.root / "config.toml", root=paths.containerd_root,
                      state=paths.containerd_state, socket=paths.containerd_socket,
                      pause_image=versions.PAUSE_IMAGE, runc=shutil.which("runc") or "/usr/sbin/runc",
                      runc_root=paths.containerd_state / "runc", cni_bin_dir=CNI_BIN_DIR,
                      cni_conf_dir=cni.parent)  # fmt: skip
        return Launch([shutil.which("containerd") or "/usr/bin/containerd", "--config", str(conf)])

    def stop_containers() -> None:
        containers.kill_all(paths)

    def kubelet(dirs: PartDirs) -> Launch:
        # The images go in before the kubelet asks for them: nothing is ever pulled.
        containers.import_images(paths, [build.image_archive(image) for image in versions.IMAGES])
        containers.reload_loaded(paths)  # Clover's images, when `cloverctl build images --load` put them here
        resolv = dirs.root / "resolv.conf"  # no upstream servers: pods resolve cluster names only
        resolv.write_text("")
        conf = render("kubelet.yaml", dirs.root / "kubelet.yaml", node_ip=net.node_ip, kubelet_port=KUBELET_PORT,
                      health_port=KUBELET_HEALTH_PORT, ca=ca, tls_cert=pki / "kubelet-server.crt",
                      tls_key=pki / "kubelet-server.key", socket=paths.containerd_socket,
                      cluster_domain=CLUSTER_DOMAIN, dns_ip=net.dns_ip, resolv_conf=resolv,
                      pod_logs=paths.pod_logs)  # fmt: skip
        return Launch([binary("kubelet"), f"--config={conf}", f"--kubeconfig={pki / 'kubelet.kubeconfig'}",
                       f"--root-dir={paths.kubelet_root}", f"--node-ip={net.node_ip}",
                       f"--hostname-override={NODE_NAME}"])  # fmt: skip

    def kube_proxy(dirs: PartDirs) -> Launch:
        conf = render("kube-proxy.yaml", dirs.root / "kube-proxy.yaml", kubeconfig=pki / "kube-proxy.kubeconfig",
                      node_name=NODE_NAME, pod_cidr=net.pod_cidr, node_ip=net.node_ip,
                      health_port=KUBE_PROXY_HEALTH_PORT, metrics_port=KUBE_PROXY_METRICS_PORT)  # fmt: skip
        return Launch([binary("kube-proxy"), f"--config={conf}"])

    def cluster_dns(dirs: PartDirs) -> Launch:
        render("coredns.yaml", paths.addons / "coredns.yaml", dns_ip=net.dns_ip, cluster_domain=CLUSTER_DOMAIN,
               image=versions.COREDNS_IMAGE)  # fmt: skip
        render("storage.yaml", paths.addons / "storage.yaml")
        return Launch([sys.executable, "-m", "stack.cluster.addons", "--kubectl", binary("kubectl"),
                       "--kubeconfig", str(paths.kubeconfig), "--volumes", str(paths.volumes),
                       str(paths.addons)])  # fmt: skip

    health = "http://127.0.0.1:{}/{}"
    return [
        part("etcd", {"client": ETCD_CLIENT_PORT, "peer": ETCD_PEER_PORT, "metrics": ETCD_METRICS_PORT}, "/health",
             lambda: probes.http_ok(health.format(ETCD_METRICS_PORT, "health")), etcd, ready_before_next=True,
             startup_timeout=30),
        part("kube-apiserver", {"https": API_PORT}, "/readyz",
             lambda: cluster_probes.https_ok(f"{net.api_url}/readyz", ca), apiserver, ready_before_next=True,
             startup_timeout=90),
        part("kube-controller-manager", {"https": CONTROLLER_MANAGER_PORT}, "/healthz",
             lambda: cluster_probes.https_ok(f"https://127.0.0.1:{CONTROLLER_MANAGER_PORT}/healthz"),
             controller_manager),
        part("kube-scheduler", {"https": SCHEDULER_PORT}, "/healthz",
             lambda: cluster_probes.https_ok(f"https://127.0.0.1:{SCHEDULER_PORT}/healthz"), scheduler),
        part("containerd", {}, "CRI socket accepts",
             lambda: cluster_probes.unix_socket(paths.containerd_socket), containerd, ready_before_next=True,
             before_stop=stop_containers),
        part("kubelet", {"https": KUBELET_PORT, "health": KUBELET_HEALTH_PORT}, f"node {NODE_NAME} Ready",
             lambda: cluster_probes.node_ready(net.api_url, ca, admin), kubelet, startup_timeout=120),
        part("kube-proxy", {"health": KUBE_PROXY_HEALTH_PORT, "metrics": KUBE_PROXY_METRICS_PORT}, "/healthz",
             lambda: probes.http_ok(health.format(KUBE_PROXY_HEALTH_PORT, "healthz")), kube_proxy, startup_timeout=90),
        part("cluster-dns", {}, f"kubernetes.default.svc.{CLUSTER_DOMAIN} resolves",
             lambda: cluster_probes.dns_answers(net.dns_ip, f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
                                                net.api_service_ip), cluster_dns, startup_timeout=180),
    ]  # fmt: skip


def usage(cfg: Config) -> str:
    """How to use the running cluster from a shell."""
    paths = ClusterPaths.of(cfg)
    return (f"The cluster's kubeconfig and kubectl {versions.KUBERNETES}:\n"
            f"  export KUBECONFIG={paths.kubeconfig} PATH={paths.bin}:$PATH\n"
            f"  kubectl get nodes")  # fmt: skip
