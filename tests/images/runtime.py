"""A private containerd for the image tests: its root, state, socket and runc root in a
directory of the test's own, no CRI plugin, stopped (by its pid) and cleaned up afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

NAMESPACE = "clover-images-test"
# Where every containerd puts its shims' sockets and fifos, whatever its configuration says.
RUN_CONTAINERD = Path("/run/containerd")

CONFIG = """\
version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = ""
[debug]
  address = ""
[metrics]
  address = ""
"""


class Containerd:
    """``containerd`` started in ``home``; ``ctr`` commands against it in one namespace."""

    def __init__(self, home: Path):
        self.home = home
        self.socket = home / "containerd.sock"
        self.runc_root = home / "runc"
        self.proc: subprocess.Popen[bytes] | None = None
        self.containers: list[str] = []
        self.made_run_dir = False

    def empty_dirs(self, name: str, targets: Sequence[str] = ("/var/lib/clover", "/tmp")) -> list[str]:
        """Mounts for a container as a pod's emptyDirs (writable by any user, as the kubelet's are):
        host directories under ``<home>/emptydirs/<name>``. (A tmpfs would not do: runc gives it
        the mode of the directory it covers.)"""
        mounts = []
        for target in targets:
            host = self.home / "emptydirs" / name / target.strip("/").replace("/", "-")
            shutil.rmtree(host, ignore_errors=True)
            host.mkdir(parents=True)
            host.chmod(0o1777)
            mounts.append(f"type=bind,src={host},dst={target},options=rbind:rw")
        return mounts

    def _hosts_mount(self) -> str:
        """An /etc/hosts naming the container's host name, as the kubelet writes one for a pod
        (the JVM's InetAddress.getLocalHost, in Kafka and Spark, fails without)."""
        hosts = self.home / "hosts"
        if not hosts.exists():
            hosts.write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{socket.gethostname()}\n")
            hosts.chmod(0o644)
        return f"type=bind,src={hosts},dst=/etc/hosts,options=rbind:ro"

    def start(self, timeout: float = 30) -> None:
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(parents=True)
        self.made_run_dir = not RUN_CONTAINERD.exists()
        config = self.home / "config.toml"
        config.write_text(CONFIG.format(root=self.home / "root", state=self.home / "state", socket=self.socket))
        with open(self.home / "containerd.log", "wb") as log:
            self.proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=log,
                                         start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.socket.exists() and self.ctr("version", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"containerd did not start: {(self.home / 'containerd.log').read_text()[-2000:]}")

    def ctr(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["ctr", "--address", str(self.socket), "--namespace", NAMESPACE, *args],
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip
        if check and done.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args[:3])} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        return done

    def import_archive(self, archive: Path) -> None:
        self.ctr("images", "import", str(archive))

    def images(self) -> set[str]:
        return set(self.ctr("images", "list", "--quiet").stdout.split())

    def _run_args(self, image: str, name: str, env: Mapping[str, str], netns: Path | None, read_only: bool,
                  mounts: Sequence[str]) -> list[str]:  # fmt: skip
        args = ["run", "--runc-root", str(self.runc_root), "--cgroup", f"{NAMESPACE}/{name}"]
        args += [f"--env={k}={v}" for k, v in env.items()]
        args += [f"--mount={m}" for m in (*mounts, self._hosts_mount())]
        if netns is not None:
            args.append(f"--with-ns=network:{netns}")
        if read_only:
            args.append("--read-only")
        return args

    def run(self, image: str, name: str, command: Sequence[str] = (), env: Mapping[str, str] | None = None,
            netns: Path | None = None, read_only: bool = False, mounts: Sequence[str] = (),
            timeout: float = 600) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run a container to its end (removed afterwards); its output and exit status."""
        args = [*self._run_args(image, name, env or {}, netns, read_only, mounts), "--rm", image, name, *command]
        return self.ctr(*args, check=False, timeout=timeout)

    def start_detached(self, image: str, name: str, command: Sequence[str] = (), env: Mapping[str, str] | None = None,
                       netns: Path | None = None, read_only: bool = False,
                       mounts: Sequence[str] = ()) -> None:  # fmt: skip
        """Start a long-running container (its output goes to ``<home>/<name>.log``)."""
        log = self.home / f"{name}.log"
        args = self._run_args(image, name, env or {}, netns, read_only, mounts)
        self.ctr(*args, f"--log-uri=file://{log}", "--detach", image, name, *command)
        self.containers.append(name)

    def exec(self, name: str, command: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        exec_id = f"x{time.monotonic_ns()}"
        return self.ctr("tasks", "exec", "--exec-id", exec_id, name, *command, check=False, timeout=timeout)

    def log(self, name: str) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def remove(self, name: str) -> None:
        """Stop a detached container (SIGTERM, then SIGKILL) and delete it."""
        self.ctr("tasks", "kill", name, check=False)
        for _ in range(100):
            listed = self.ctr("tasks", "list", check=False).stdout
            if not any(line.split()[:1] == [name] and "RUNNING" in line for line in listed.splitlines()):
                break
            time.sleep(0.2)
        else:
            self.ctr("tasks", "kill", "--signal", "SIGKILL", name, check=False)
            time.sleep(1)
        self.ctr("tasks", "delete", "--force", name, check=False)
        self.ctr("containers", "delete", name, check=False)
        if name in self.containers:
            self.containers.remove(name)

    def stop(self) -> None:
        for name in list(self.containers):
            self.remove(name)
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for mount in reversed(_mounts_under(self.home)):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        if self.made_run_dir and not any(RUN_CONTAINERD.glob("s/*")):  # no other containerd's shim uses it
            shutil.rmtree(RUN_CONTAINERD, ignore_errors=True)
        # The imported images (GBs; the next start begins empty anyway); logs and config stay.
        shutil.rmtree(self.home / "root", ignore_errors=True)
        shutil.rmtree(self.home / "emptydirs", ignore_errors=True)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            target = line.split()[1].replace("\\040", " ")
            if target == prefix or target.startswith(prefix + "/"):
                found.append(target)
    return found


class Netns:
    """A named network namespace of the test's own with its loopback up: containers joined to
    it share addresses, as the containers of a pod do."""

    def __init__(self, name: str):
        self.name = name
        self.path = Path("/var/run/netns") / name

    def __enter__(self) -> Netns:
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True, capture_output=True)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)
