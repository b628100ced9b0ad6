"""What the cluster may change on this machine, captured before ``up`` and after ``down``.

Only what is the cluster's own is compared, so other engineers' stacks (their namespaces and
veths: sdc-*, t*-*, cv*) can come and go meanwhile."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from stack.cluster.host import OUTSIDE_DIRS, read_sysctls
from stack.cluster.layout import BRIDGE

# Where a cluster's parts keep files by default (each is configured elsewhere here).
ELSEWHERE = tuple(map(Path, ("/opt/containerd", "/var/lib/containerd", "/etc/cni", "/var/log/pods", "/run/netns",
                             "/etc/kubernetes", "/var/run/kubernetes")))  # fmt: skip


@dataclass(frozen=True)
class Snapshot:
    lo_addresses: frozenset[str]
    our_links: frozenset[str]
    mounts: frozenset[str]
    iptables: str
    nft_tables: str
    sysctls: dict[str, str]
    processes: frozenset[str]
    outside_dirs: frozenset[str]
    kubepods_cgroups: frozenset[str]


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True).stdout


def iptables() -> str:
    """Both families' rules, without counters and comments."""
    text = _run("iptables-save") + _run("ip6tables-save")
    lines = [re.sub(r"\[\d+:\d+\]", "", line) for line in text.splitlines() if not line.startswith("#")]
    return "\n".join(lines)


def snapshot(cluster_dir: Path) -> Snapshot:
    links = _run("ip", "-o", "link", "show")
    names = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()}
    ours = {n for n in names if n == BRIDGE or n.startswith("veth")}
    mounts = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith((str(cluster_dir), "/run/containerd", "/var/lib/cni", "/var/lib/kubelet")):
            mounts.add(point)
    procs = set()
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(cluster_dir) in cmdline or "containerd-shim" in cmdline:
            procs.add(f"{proc.pid} {cmdline[:120]}")
    return Snapshot(
        lo_addresses=frozenset(_run("ip", "-o", "addr", "show", "dev", "lo").split()),
        our_links=frozenset(ours),
        mounts=frozenset(mounts),
        iptables=iptables(),
        nft_tables=_run("nft", "list", "tables") if Path("/usr/sbin/nft").exists() else "",
        sysctls=read_sysctls(),
        processes=frozenset(procs),
        outside_dirs=frozenset(str(d) for d in (*OUTSIDE_DIRS, *ELSEWHERE) if d.exists()),
        kubepods_cgroups=frozenset(str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods")),
    )  # fmt: skip
