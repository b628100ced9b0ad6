"""The real local cluster, started once per session in its own state directory and torn down.

These tests run only when chosen: ``pytest -m cluster tests/cluster`` (``make cluster-test``).
They need root, and the first run builds the cluster (about 20 minutes; then seconds)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from clover.config import Config
from stack.catalogue import local_stack
from stack.cluster import containers
from stack.cluster.layout import ClusterPaths
from stack.cluster.parts import GROUP
from stack.images import build
from stack.launcher import Launcher
from tests.cluster.machine import Snapshot, snapshot

ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = ROOT / ".clover-test-cluster"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    chosen = "cluster" in (config.option.markexpr or "")
    items.sort(key=lambda item: Path(str(item.fspath)).name == "test_teardown.py")  # it takes the cluster down
    for item in items:
        if Path(str(item.fspath)).parent.name == "cluster":
            item.add_marker(pytest.mark.cluster)
            if not chosen:
                item.add_marker(pytest.mark.skip(reason="the cluster tests run with -m cluster (make cluster-test)"))


@pytest.fixture(scope="session")
def cluster_cfg() -> Config:
    return replace(Config.from_env(), state_dir=STATE_DIR)


@pytest.fixture(scope="session")
def cluster_paths(cluster_cfg: Config) -> ClusterPaths:
    return ClusterPaths.of(cluster_cfg)


class Timings(dict[str, float]):
    """Seconds each phase took, printed at the end of the session (tests assert no timing)."""


def load_images(cluster_paths: ClusterPaths, timings: Timings, names: tuple[str, ...], tag: str = "latest") -> None:
    """Import the built image archives ``names`` into the cluster's containerd (fails if one is not built)."""
    archives = build.archives(Config.from_env(), tag=tag, names=list(names))
    missing = [a.name for a in archives if not a.exists()]
    if missing:
        pytest.fail(f"no image archives {missing}: build them first (make images)")
    started = time.monotonic()
    containers.import_images(cluster_paths, archives)
    timings[f"import {len(archives)} images"] = time.monotonic() - started


@pytest.fixture(scope="session")
def timings() -> Iterator[Timings]:
    found = Timings()
    yield found
    print("\n[cluster] timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in found.items()))
    (STATE_DIR / "timings.json").write_text(json.dumps(found, indent=1))


@pytest.fixture(scope="session")
def before_up(cluster_cfg: Config) -> Snapshot:
    if os.geteuid() != 0:
        pytest.skip("the cluster needs root")
    return snapshot(ClusterPaths.of(cluster_cfg).root)


@pytest.fixture(scope="session")
def cluster(cluster_cfg: Config, before_up: Snapshot, timings: Timings) -> Iterator[Launcher]:
    launcher = local_stack(cluster_cfg)
    started = time.monotonic()
    marks: dict[str, float] = {}

    def progress(message: str) -> None:
        print(f"[cluster] {message}", flush=True)
        for part in ("kubelet", "cluster-dns"):
            if message.startswith(part) and " ready " in message:
                marks[part] = time.monotonic() - started

    launcher.up([GROUP], fresh=True, progress=progress)  # an empty cluster (etcd keeps objects otherwise)
    timings["up (build check + start)"] = time.monotonic() - started
    timings["node Ready after"] = marks.get("kubelet", 0.0)
    timings["cluster DNS ready after"] = marks.get("cluster-dns", 0.0)
    yield launcher
    launcher.down([GROUP], progress=progress)


class Kubectl:
    """The built kubectl with the cluster's kubeconfig."""

    def __init__(self, paths: ClusterPaths):
        self.argv = [str(paths.bin / "kubectl"), "--kubeconfig", str(paths.kubeconfig)]

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120) -> str:
        done = subprocess.run([*self.argv, *args], input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))


def routed_service(kubectl: Kubectl, namespace: str, name: str, port: int, timeout: float = 60) -> str:
    """``ip:port`` of a Service once this machine can connect to it. A Deployment is ready before
    kube-proxy has routed its Service to the new pod; until then a connection is refused."""
    ip = str(kubectl.json("-n", namespace, "get", "service", name)["spec"]["clusterIP"])
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((ip, port), timeout=5).close()
            return f"{ip}:{port}"
        except OSError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"Service {namespace}/{name} ({ip}:{port}): {exc} for {timeout:.0f}s") from None
            time.sleep(0.5)


@pytest.fixture(scope="session")
def kubectl(cluster: Launcher, cluster_paths: ClusterPaths) -> Kubectl:
    return Kubectl(cluster_paths)
