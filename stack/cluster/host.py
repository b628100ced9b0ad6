"""What the cluster needs on this machine, set up before its first part starts and undone after
its last part stops (``HostSetup`` of every cluster part).

Setup: build what is missing, make the certificates, add the node address to lo, record the
sysctls the kubelet and the bridge plugin change, add the FORWARD rule that keeps pods on this
machine. Teardown: kill what the stopped containerd left running (shims, containers), unmount
everything under the cluster directory, delete the pods' bridge and veths, our iptables rules
and chains, the address and the kubelet's cgroups, and put the sysctls back.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import psutil

from clover.config import Config
from stack.cluster import build, netfilter, pki, versions
from stack.cluster.layout import BRIDGE, ClusterPaths, Network
from stack.cluster.steps import BuildError
from stack.hostsetup import Progress
from stack.launcher import StackError

# Set by the kubelet (vm.*, kernel.*) and the bridge plugin (ip_forward); the rest are read by
# kube-proxy and kept here in case it changes them.
SYSCTLS = (
    "vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops", "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes", "net.ipv4.ip_forward", "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
)  # fmt: skip
# Directories outside the state directory that containerd (shim sockets), the CNI plugins
# (results cache) and the kubelet (device-plugin socket, links to container logs, the log
# shipper's hostPath of k8s/logging) create wherever they are configured.
OUTSIDE_DIRS = (Path("/run/containerd"), Path("/var/lib/cni"), Path("/var/lib/kubelet"), Path("/var/log/containers"),
                Path("/var/lib/clover-log-shipper"))  # fmt: skip
CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods"


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    return {n: _sysctl_path(n).read_text().strip() for n in SYSCTLS if _sysctl_path(n).exists()}


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True)


def has_address(node_ip: str) -> bool:
    return f" {node_ip}/32 " in _ip("-o", "-4", "addr", "show", "dev", "lo").stdout


class ClusterHost:
    """The machine-wide side of the local cluster: one per launcher, shared by the cluster parts."""

    name = "cluster host"

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.paths = ClusterPaths.of(cfg)
        self.net = Network.of(cfg)
        self.bridge = BRIDGE

    # -- setup ---------------------------------------------------------------------------------

    def setup(self, progress: Progress) -> None:
        if os.geteuid() != 0:
            raise StackError("the cluster needs root (network address, iptables, mounts, cgroups)")
        started = time.monotonic()
        try:
            build.build(self.cfg, progress)
        except BuildError as exc:
            raise StackError(f"building the cluster failed: {exc}") from None
        progress(f"cluster     built or up to date after {time.monotonic() - started:.1f}s")
        self.paths.root.mkdir(parents=True, exist_ok=True)
        record = self.paths.host_record
        if not record.exists():
            saved = {
                "sysctls": read_sysctls(),
                "added_address": not has_address(self.net.node_ip),
                "created_dirs": [str(d) for d in OUTSIDE_DIRS if not d.exists()],
                "nft_tables": netfilter.nft_tables(),
            }
            record.write_text(json.dumps(saved, indent=1))
        if not has_address(self.net.node_ip):
            done = _ip("addr", "add", f"{self.net.node_ip}/32", "dev", "lo")
            if done.returncode != 0:
                raise StackError(f"cannot add {self.net.node_ip}/32 to lo: {done.stderr.strip()}")
        netfilter.add_forward_rule(self.bridge)
        if pki.ensure(self.paths, self.net):
            progress(f"cluster     certificates and kubeconfigs made in {self.paths.pki}")
        self._link_binaries()
        progress(f"cluster     node address {self.net.node_ip} on lo; pods {self.net.pod_cidr}, "
                 f"services {self.net.service_cidr}")  # fmt: skip

    def _link_binaries(self) -> None:
        b = build.Build(self.cfg)
        self.paths.bin.mkdir(parents=True, exist_ok=True)
        for name in ("kubectl", "etcd", *(n for n in versions.BINARIES if n != "kubectl")):
            link = self.paths.bin / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(b.binary(name))

    # -- teardown ------------------------------------------------------------------------------

    def teardown(self, progress: Progress) -> None:
        record = self.paths.host_record
        if not record.exists():
            # Not set up from this state directory: only what is unmistakably its own is removed.
            if self._shims() or self._mounts():
                self._kill_leftover_processes(in_cgroups=False)
                self._unmount()
            return
        started = time.monotonic()
        saved = json.loads(record.read_text())
        problems: list[str] = []
        killed = self._kill_leftover_processes(in_cgroups=True)
        unmounted = self._unmount(run_containerd="/run/containerd" in saved.get("created_dirs", []))
        self._delete_links()
        for step in (
            lambda: netfilter.remove(self.bridge),
            lambda: netfilter.remove_empty_tables(saved.get("nft_tables", [])),
            self._remove_cgroups,
        ):
            try:
                step()
            except (RuntimeError, OSError) as exc:
                problems.append(str(exc))
        if saved.get("added_address", False) and has_address(self.net.node_ip):
            done = _ip("addr", "del", f"{self.net.node_ip}/32", "dev", "lo")
            if done.returncode != 0:
                problems.append(f"cannot remove {self.net.node_ip}/32 from lo: {done.stderr.strip()}")
        restored = self._restore_sysctls(saved.get("sysctls", {}), problems)
        # Runtime state only: the next start imports the images again (below a second).
        for path in (self.paths.containerd_state, self.paths.containerd_root, self.paths.ipam_dir):
            shutil.rmtree(path, ignore_errors=True)
        created = saved.get("created_dirs", [])
        for directory in created:
            shutil.rmtree(directory, ignore_errors=True)
        for directory in (d for d in OUTSIDE_DIRS if str(d) not in created and d.is_dir()):
            for link in directory.iterdir():
                if link.is_symlink() and os.readlink(link).startswith(str(self.paths.root)):
                    link.unlink()
        if problems:
            raise StackError("the cluster could not be removed completely:\n  " + "\n  ".join(problems))
        record.unlink(missing_ok=True)
        progress(f"cluster     host cleaned after {time.monotonic() - started:.1f}s: {killed} leftover processes, "
                 f"{unmounted} mounts, bridge, iptables, address; sysctls restored: "
                 f"{', '.join(restored) or 'none'}")  # fmt: skip

    def _shims(self) -> list[psutil.Process]:
        """Shims started by this cluster's containerd (found by its socket)."""
        socket = str(self.paths.containerd_socket)
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if cmdline and "containerd-shim" in cmdline[0] and socket in cmdline:
                found.append(proc)
        return found

    def _leftover_processes(self, in_cgroups: bool) -> list[psutil.Process]:
        """The shims, then (``in_cgroups``) every process in the kubelet's cgroups."""
        found = self._shims()
        if not in_cgroups:
            return found
        pids = {p.pid for p in found}
        for tasks in CGROUP_ROOT.glob(f"*/{KUBEPODS}/**/tasks"):
            with contextlib.suppress(OSError):
                for line in tasks.read_text().split():
                    if int(line) not in pids:
                        with contextlib.suppress(psutil.Error):
                            found.append(psutil.Process(int(line)))
                            pids.add(int(line))
        return found

    def _kill_leftover_processes(self, in_cgroups: bool) -> int:
        everything: dict[int, psutil.Process] = {}
        for proc in self._leftover_processes(in_cgroups):
            with contextlib.suppress(psutil.Error):
                everything.update((child.pid, child) for child in proc.children(recursive=True))
            everything.setdefault(proc.pid, proc)
        # Containers first, their shims last: a shim killed first would leave its container to init.
        for proc in everything.values():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(list(everything.values()), timeout=10)
        return len(everything)

    def _mounts(self, run_containerd: bool = False) -> list[str]:
        """Mount points under the cluster directory (and ``/run/containerd`` when this cluster made it)."""
        roots = (str(self.paths.root) + "/", "/run/containerd/") if run_containerd else (str(self.paths.root) + "/",)
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(roots) or point == str(self.paths.root):
                points.append(point)
        return points

    def _unmount(self, run_containerd: bool = False) -> int:
        count = 0
        for _ in range(5):  # a mount can hide another at the same point
            points = self._mounts(run_containerd)
            if not points:
                break
            for point in sorted(points, key=lambda p: p.count("/"), reverse=True):
                if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                    subprocess.run(["umount", "-l", point], capture_output=True)
                count += 1
        return count

    def _delete_links(self) -> None:
        listed = _ip("-o", "link", "show", "master", self.bridge).stdout
        for line in listed.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            _ip("link", "del", name)
        if _ip("link", "show", self.bridge).returncode == 0:
            _ip("link", "del", self.bridge)

    def _remove_cgroups(self) -> None:
        for top in CGROUP_ROOT.glob(f"*/{KUBEPODS}"):
            if top.is_symlink():
                continue
            below = [p for p in top.rglob("*") if p.is_dir()]
            for directory in sorted(below, key=lambda p: len(p.parts), reverse=True):
                directory.rmdir()
            top.rmdir()

    def _restore_sysctls(self, saved: dict[str, str], problems: list[str]) -> list[str]:
        restored = []
        for name, value in saved.items():
            path = _sysctl_path(name)
            with contextlib.suppress(FileNotFoundError):
                if path.read_text().strip() != value:
                    try:
                        path.write_text(value)
                        restored.append(f"{name}={value}")
                    except OSError as exc:
                        problems.append(f"cannot set {name}={value}: {exc}")
        return restored
