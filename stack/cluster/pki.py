"""The cluster's certificates and kubeconfigs, made with openssl (ECDSA P-256, in seconds).

One CA signs every certificate; the service-account tokens are signed with their own key. The
set is made once per state directory and again only when the addresses it names change."""

from __future__ import annotations

import json
import string
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stack.cluster.layout import CLUSTER_DOMAIN, NODE_NAME, ClusterPaths, Network

CONF_DIR = Path(__file__).resolve().parent / "conf"
DAYS = 3650


@dataclass(frozen=True)
class Identity:
    """A certificate: its file name, subject, usage and (for servers) alternative names."""

    name: str
    subject: str
    usage: str  # serverAuth, clientAuth or both
    alt_names: tuple[str, ...] = ()


def identities(net: Network) -> list[Identity]:
    api_names = (
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
    )
    return [
        Identity("kube-apiserver", "/CN=kube-apiserver", "serverAuth",
                 (*(f"DNS:{n}" for n in (*api_names, "localhost")), "IP:127.0.0.1", f"IP:{net.node_ip}",
                  f"IP:{net.api_service_ip}")),
        Identity("admin", "/O=system:masters/CN=clover-admin", "clientAuth"),
        Identity("kube-controller-manager", "/CN=system:kube-controller-manager", "clientAuth"),
        Identity("kube-scheduler", "/CN=system:kube-scheduler", "clientAuth"),
        Identity("kubelet-client", f"/O=system:nodes/CN=system:node:{NODE_NAME}", "clientAuth"),
        Identity("kubelet-server", f"/CN={NODE_NAME}", "serverAuth", (f"DNS:{NODE_NAME}", f"IP:{net.node_ip}")),
        Identity("kube-proxy", "/CN=system:kube-proxy", "clientAuth"),
        Identity("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", "clientAuth"),
    ]  # fmt: skip


# Which identity each component's kubeconfig carries.
KUBECONFIGS = {
    "admin": "admin",
    "kube-controller-manager": "kube-controller-manager",
    "kube-scheduler": "kube-scheduler",
    "kubelet": "kubelet-client",
    "kube-proxy": "kube-proxy",
}


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()[-400:]}")


def _new_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))
    path.chmod(0o600)


def ensure(paths: ClusterPaths, net: Network) -> bool:
    """Make the CA, certificates, service-account keys and kubeconfigs unless they exist for
    these addresses; returns whether anything was made."""
    pki = paths.pki
    wanted = json.dumps({"node_ip": net.node_ip, "service_cidr": net.service_cidr, "days": DAYS}, sort_keys=True)
    record = pki / "made-for.json"
    made = [pki / f"{i.name}.crt" for i in identities(net)] + [pki / "sa.pub", paths.kubeconfig]
    if record.exists() and record.read_text() == wanted and all(p.exists() for p in made):
        return False
    pki.mkdir(parents=True, exist_ok=True)
    pki.chmod(0o700)
    ca_key, ca_crt = pki / "ca.key", pki / "ca.crt"
    _new_key(ca_key)
    _openssl("req", "-x509", "-new", "-key", str(ca_key), "-subj", "/CN=clover-cluster-ca", "-days", str(DAYS),
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-out", str(ca_crt))  # fmt: skip
    for ident in identities(net):
        key = pki / f"{ident.name}.key"
        _new_key(key)
        extensions = ["-addext", "basicConstraints=critical,CA:FALSE",
                      "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
                      "-addext", f"extendedKeyUsage={ident.usage}"]  # fmt: skip
        if ident.alt_names:
            extensions += ["-addext", "subjectAltName=" + ",".join(ident.alt_names)]
        _openssl("req", "-x509", "-new", "-key", str(key), "-subj", ident.subject, "-days", str(DAYS),
                 "-CA", str(ca_crt), "-CAkey", str(ca_key), *extensions,
                 "-out", str(pki / f"{ident.name}.crt"))  # fmt: skip
    _new_key(pki / "sa.key")
    _openssl("pkey", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    for component, ident_name in KUBECONFIGS.items():
        target = paths.kubeconfig if component == "admin" else pki / f"{component}.kubeconfig"
        write_kubeconfig(target, net.api_url, ca_crt, pki / f"{ident_name}.crt", pki / f"{ident_name}.key", component)
    record.write_text(wanted)
    return True


def write_kubeconfig(target: Path, server: str, ca: Path, cert: Path, key: Path, user: str) -> None:
    text = string.Template((CONF_DIR / "kubeconfig.yaml").read_text()).substitute(
        server=server, ca=ca, cert=cert, key=key, user=user
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(0o600)
