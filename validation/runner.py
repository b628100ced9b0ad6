"""One JMeter run: the master process (non-GUI), and the local JMeter servers it drives.

A run lives in its own directory::

    <runs>/<run id>/test.jmx          the plan as it was when the run started
                    default.jtl       every sample (from the master, or from all servers)
                    jmeter.log        JMeter's log, with the summariser lines
                    jmeter.out        the master's console output
                    run.json          state, pids, times, exit code
                    slaves/<i>/       each local server's log

Without servers the master sends the traffic. With ``remote_hosts`` (servers already running,
e.g. slave pods) or ``local_slaves=N`` (N servers started here on loopback, each on its own
RMI port, stopped when the run ends) the servers send it and return their samples to the
master, which writes them all to one JTL.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clover.config import LOOPBACK
from stack.launcher import port_is_free
from validation.jmeter import JMeter

STATES = ("starting", "running", "finished", "failed", "stopped")


class RunError(RuntimeError):
    """A run could not be started; the message says why."""


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{os.urandom(2).hex()}"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_tcp_ports(first: int, count: int) -> list[int]:
    """``count`` free loopback ports from ``first`` upwards."""
    ports: list[int] = []
    port = first
    while len(ports) < count:
        if port > 65535:
            raise RunError(f"no {count} free TCP ports from {first} for local JMeter servers")
        if port_is_free(port):
            ports.append(port)
        port += 1
    return ports


def prune_runs(runs: Path, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest run directories (run ids sort by time); returns the ids removed."""
    ids = sorted(d.name for d in runs.iterdir() if d.is_dir() and re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", d.name))
    removed = ids[: max(0, len(ids) - keep)]
    for run_id in removed:
        shutil.rmtree(runs / run_id, ignore_errors=True)
    return removed


@dataclass
class RunInfo:
    """What run.json records (and GetStatus reports)."""

    run_id: str
    test_plan: str
    state: str = "starting"
    pid: int = 0
    num_slaves: int = 0
    slave_hosts: list[str] = field(default_factory=list)
    slave_pids: list[int] = field(default_factory=list)
    started_at: float = 0.0
    finished_at: float = 0.0
    exit_code: int = 0
    detail: str = ""
    shutdown_port: int = 0

    @classmethod
    def load(cls, path: Path) -> RunInfo:
        data = json.loads(path.read_text())
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _stop_process(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; reaps it."""
    if proc.poll() is not None:
        return
    _kill_group(proc, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        _kill_group(proc, signal.SIGKILL)
        proc.wait(10)


_NOISE = re.compile(r"StatusConsoleListener|package scanning|java\.util\.prefs|user preferences directory")


def console_problem(text: str) -> str:
    """The lines of a master's console output that say why it failed (noise left out)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not _NOISE.search(line)]
    bad = [line for line in lines if re.search(r"error|exception|failed|cannot|could not", line, re.I)]
    unique = list(dict.fromkeys(bad or lines))
    return " | ".join(unique[-3:])[:800]


class Run:
    """A JMeter run that has been started; ``info`` is kept current by a watcher thread."""

    def __init__(
        self,
        jmeter: JMeter,
        jmx: Path,
        root: Path,
        test_plan: str,
        remote_hosts: Sequence[str] = (),
        local_slaves: int = 0,
        rmi_port: int = 1099,
        rmi_host: str = LOOPBACK,
    ):
        if remote_hosts and local_slaves:
            raise RunError("give either remote JMeter servers or a number of local ones, not both")
        self.jmeter = jmeter
        self.rmi_host = rmi_host
        root = root.resolve()
        self.root = root
        self.info = RunInfo(run_id=root.name, test_plan=test_plan)
        self._lock = threading.Lock()
        self._stop_requested = False
        self._done = threading.Event()
        self.slaves: list[subprocess.Popen[bytes]] = []
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy2(jmx, self.jmx)
        try:
            self._start(list(remote_hosts), local_slaves, rmi_port)
        except BaseException:
            for slave in self.slaves:
                _stop_process(slave, 5)
            raise

    # -- files ---------------------------------------------------------------------------------

    @property
    def jmx(self) -> Path:
        return self.root / "test.jmx"

    @property
    def jtl(self) -> Path:
        return self.root / "default.jtl"

    @property
    def log(self) -> Path:
        return self.root / "jmeter.log"

    @property
    def console(self) -> Path:
        return self.root / "jmeter.out"

    def _save(self) -> None:
        tmp = self.root / ".run.json.tmp"
        tmp.write_text(json.dumps(asdict(self.info), indent=2))
        os.replace(tmp, self.root / "run.json")

    # -- start ---------------------------------------------------------------------------------

    def _spawn(self, argv: list[str], cwd: Path, out: Path) -> subprocess.Popen[bytes]:
        cwd.mkdir(parents=True, exist_ok=True)
        with open(out, "ab") as f:
            return subprocess.Popen(
                argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _start(self, remote_hosts: list[str], local_slaves: int, rmi_port: int) -> None:
        hosts = list(remote_hosts)
        for i, port in enumerate(free_tcp_ports(rmi_port, local_slaves)):
            d = self.root / "slaves" / str(i + 1)
            argv = self.jmeter.server_command(port, d / "jmeter-server.log", d)
            self.slaves.append(self._spawn(argv, d, d / "jmeter-server.out"))
            hosts.append(f"127.0.0.1:{port}")
        self.info.shutdown_port = free_udp_port()
        argv = self.jmeter.run_command(
            self.jmx,
            self.jtl,
            self.log,
            self.root,
            remote_hosts=hosts,
            shutdown_port=self.info.shutdown_port,
            exit_servers=bool(local_slaves),
            rmi_host=self.rmi_host,
        )
        master = self._spawn(argv, self.root, self.console)
        self.master = master
        self.info.pid = master.pid
        self.info.num_slaves = len(hosts)
        self.info.slave_hosts = hosts
        self.info.slave_pids = [s.pid for s in self.slaves]
        self.info.started_at = time.time()
        self.info.state = "running"
        self._save()
        threading.Thread(target=self._watch, name=f"jmeter-run-{self.info.run_id}", daemon=True).start()

    # -- watching and stopping -----------------------------------------------------------------

    def _watch(self) -> None:
        code = self.master.wait()
        for slave in self.slaves:
            # Local servers exit on their own after the test (-X); stop any that linger.
            try:
                slave.wait(15)
            except subprocess.TimeoutExpired:
                _stop_process(slave, 10)
        with self._lock:
            self.info.exit_code = code
            self.info.finished_at = time.time()
            console = self.console.read_text(errors="replace") if self.console.exists() else ""
            if self._stop_requested:
                self.info.state = "stopped"
            elif code != 0 or "Error in NonGUIDriver" in console or "Exiting due to" in console:
                self.info.state = "failed"
                self.info.detail = console_problem(console) or f"JMeter exited with code {code}"
            else:
                self.info.state = "finished"
            self._save()
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to end; True when it has."""
        return self._done.wait(timeout)

    def stop(self, now: bool = False, grace: float = 30.0) -> None:
        """Ask JMeter to stop (``Shutdown``: finish current requests; ``StopTestNow``: abort them),
        then terminate it if it has not ended after ``grace`` seconds."""
        with self._lock:
            if self.done:
                return
            self._stop_requested = True
        message = b"StopTestNow" if now else b"Shutdown"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
            sock.sendto(message, ("127.0.0.1", self.info.shutdown_port))
        if not self.wait(grace):
            _stop_process(self.master, 10)
            for slave in self.slaves:
                _stop_process(slave, 10)
            self.wait(30)
