"""The benchmark's own Redis, Jaeger and sample chain, set up so that runs cannot trip on each other.

* One run at a time per state directory: a lock file (``<state>/bench.lock``, held with
  ``flock``); a second run refuses, naming the holder's pid.
* Before starting, what a previous run left is waited for (pods still stopping remove their
  namespaces themselves) for up to ``LEFTOVER_WAIT_SECONDS``; pods still running are refused,
  named; namespaces and veths of this tag whose pod is gone are removed.
* Jaeger starts each run (unless ``reuse``) with an empty store.
* SIGTERM ends a run like Ctrl-C: what the run started is stopped and its namespaces removed.

Ports (31xxx) are below the kernel's ephemeral range (32768-) and above those of the test
suite (14317-26686 plus its CLOVER_TEST_PORT_OFFSET) and of the other benchmarks (+20000).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from clover.config import Config
from sdc import netns, topology
from stack.catalogue import local_stack
from stack.launcher import Launcher
from stack.secrets import local_config

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("redis", "jaeger", "sdc")
LEFTOVER_WAIT_SECONDS = 20.0


class BenchBusy(RuntimeError):
    """Another run holds the lock, or a previous run's pods are still there."""


def bench_env(
    state_dir: str | None = None, port_offset: int = 0, tag: str = "sdcb", netns_mode: bool | None = None
) -> dict[str, str]:
    """The settings of the benchmark's stack: its own state directory, ports, subnet and tag."""

    def port(base: int) -> str:
        return str(base + port_offset)

    in_netns = topology.netns_available() if netns_mode is None else netns_mode
    third = 200 + port_offset // 100 % 50
    return {
        "CLOVER_STATE_DIR": state_dir or os.environ.get("CLOVER_BENCH_STATE_DIR") or str(ROOT / ".clover/bench-sdc"),
        "CLOVER_REDIS_URL": f"redis://127.0.0.1:{port(31379)}/0",
        "CLOVER_JAEGER_URL": f"http://127.0.0.1:{port(31686)}",
        "CLOVER_JAEGER_QUERY_GRPC_PORT": port(31685),
        "CLOVER_JAEGER_THRIFT_PORT": port(31268),
        "CLOVER_JAEGER_AGENT_PORT": port(31831),
        "CLOVER_JAEGER_HEALTH_PORT": port(31133),
        "CLOVER_OTLP_HTTP_URL": f"http://127.0.0.1:{port(31318)}",
        "CLOVER_OTLP_GRPC_PORT": port(31317),
        "CLOVER_PROMETHEUS_URL": f"http://127.0.0.1:{port(31090)}",
        "CLOVER_SDC_TAG": tag,
        "CLOVER_SDC_STATS_PORT": port(31190),
        "CLOVER_SDC_MODE": "netns" if in_netns else "loopback",
        "CLOVER_SDC_SUBNET": f"10.177.{third}.0/24" if in_netns else f"127.177.{third}.0/24",
    }


def leftover_links(tag: str) -> tuple[list[str], list[str]]:
    """(namespaces, host-side links) named after ``tag``: ``<tag>-<pod>`` and ``<tag>-<abbrev>``."""
    prefix = f"{tag}-"
    spaces = sorted(p.name for p in netns.NETNS_DIR.glob(prefix + "*")) if netns.NETNS_DIR.exists() else []
    links = sorted(n for n in os.listdir("/sys/class/net") if n.startswith(prefix))
    return spaces, links


class BenchStack:
    """Redis, Jaeger and the chain for one run (``with BenchStack(env) as stack:``), or the
    ``parts`` named; with ``reuse``, running parts are used and left running."""

    def __init__(self, env: Mapping[str, str], reuse: bool = False, parts: tuple[str, ...] = PARTS):
        self.reuse = reuse
        self.parts = list(parts)
        self.cfg: Config = local_config({**os.environ, **env})
        self.launcher: Launcher = local_stack(self.cfg)
        self.started: list[str] = []
        self.removed: list[str] = []
        self._lock: int | None = None
        self._previous_handler: Any = signal.SIG_DFL

    def __enter__(self) -> BenchStack:
        self._take_lock(self.cfg.state_dir / "bench.lock")
        self._previous_handler = signal.signal(signal.SIGTERM, _interrupt)
        try:
            if not self.reuse:
                self.removed = self._clear_leftovers()
                self._empty_trace_store()
            self.started = [p.name for p in self.launcher.select(self.parts) if self.launcher.process(p.name) is None]
            self.launcher.up(self.parts, progress=lambda m: None)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._finish()
        finally:
            signal.signal(signal.SIGTERM, self._previous_handler)

    def _take_lock(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode().strip() or "?"
            os.close(fd)
            raise BenchBusy(
                f"another benchmark run (pid {holder}) is using {path.parent}; wait for it to end"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock = fd

    def _empty_trace_store(self) -> None:
        """A run's Jaeger starts with an empty store: the spans of earlier runs would grow it
        run after run, and its compactions of them would share the cores with this run."""
        if "jaeger" in self.parts and self.launcher.process("jaeger") is None:
            shutil.rmtree(self.launcher.dirs("jaeger").data, ignore_errors=True)

    def _clear_leftovers(self) -> list[str]:
        """Wait for a previous run's pods and namespaces to go; refuse live pods; remove the
        namespaces and veths of pods that are gone. Returns what was removed."""
        tag = self.cfg.sdc_tag
        deadline = time.monotonic() + LEFTOVER_WAIT_SECONDS
        while True:
            live = [n for n in topology.POD_NAMES if self.launcher.process(n) is not None]
            spaces, links = leftover_links(tag)
            if not (live or spaces or links) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if live:
            raise BenchBusy(
                f"pods of a previous run are still running in {self.cfg.state_dir}: {', '.join(live)}; stop them "
                f"with `CLOVER_STATE_DIR={self.cfg.state_dir} cloverctl local down sdc` or run with --reuse"
            )
        self._remove_pod_networks()
        spaces_after, links_after = leftover_links(tag)
        if spaces_after or links_after:
            raise BenchBusy(f"cannot remove what a previous run left: {', '.join(spaces_after + links_after)}")
        return spaces + links

    def _remove_pod_networks(self) -> None:
        for name in topology.POD_NAMES:
            netns.delete_pod_network(topology.netns_name(self.cfg, name), topology.host_veth(self.cfg, name))

    def _finish(self) -> None:
        """Stop what this run started and remove its namespaces; release the lock."""
        try:
            if self.started and not self.reuse:
                self.launcher.down(self.started)
                self._remove_pod_networks()
        finally:
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
