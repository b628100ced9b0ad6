"""Clovisor as a process: qdiscs gone after SIGTERM, stale ones cleaned at start, and a Kafka
outage that loses no span. Root only; the test makes and removes its own pods."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from clover.config import Config
from tests.integration.clovisor_support import SpanReader, read_response, request, wait_listening, wait_until

pytestmark = [
    pytest.mark.bpf,
    pytest.mark.skipif(os.geteuid() != 0, reason="loading BPF programs and making namespaces needs root"),
]

ROOT = Path(__file__).resolve().parents[2]


def clsact_devices() -> set[str]:
    out = subprocess.run(["tc", "qdisc", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(" dev ")[1].split()[0] for line in out.splitlines() if line.startswith("qdisc clsact")}


@pytest.fixture(scope="module")
def lab(cfg: Config) -> Iterator[object]:
    from clovisor.lab import Lab

    with Lab("cvl", "10.207.21.0/24") as lab:
        pod = lab.add_pod("life", ports={"http": 8090}, service="life-svc")
        proc = subprocess.Popen(pod.exec(sys.executable, "-m", "clovisor.lab", "serve", "8090"), cwd=ROOT)
        lab.register(cfg, pod)
        try:
            wait_listening(pod, 8090)
            yield lab
        finally:
            proc.kill()
            proc.wait()


def start_clovisor(stack: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "clovisor"), "run", "--discovery", "local", "--metrics-port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def own_filters(veth: str) -> int:
    """How many of Clovisor's BPF filters (named ``clovisor:*``) the veth's clsact hooks hold."""
    shown = [subprocess.run(["tc", "filter", "show", "dev", veth, hook], capture_output=True, text=True).stdout
             for hook in ("ingress", "egress")]  # fmt: skip
    return sum(out.count("clovisor:") for out in shown)


def wait_attached(veth: str, proc: subprocess.Popen[str]) -> None:
    """Until both of Clovisor's filters are on ``veth`` (it adds the clsact qdisc first, then them:
    a Clovisor killed in between leaves a qdisc holding nothing of its own)."""

    def attached() -> bool:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "clovisor exited"
        return veth in clsact_devices() and own_filters(veth) == 2

    wait_until(attached, 30, f"Clovisor's filters on {veth}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_clovisor_leaves_no_qdisc(stack, lab, sig) -> None:  # type: ignore[no-untyped-def]
    veth = lab.pods["life"].host_veth
    assert veth not in clsact_devices()
    proc = start_clovisor(stack)
    wait_attached(veth, proc)
    proc.send_signal(sig)
    assert proc.wait(30) == 0
    assert veth not in clsact_devices()


def test_qdiscs_left_by_a_killed_clovisor_are_removed_at_the_next_start(stack, lab) -> None:  # type: ignore[no-untyped-def]
    veth = lab.pods["life"].host_veth
    proc = start_clovisor(stack)
    wait_attached(veth, proc)
    proc.kill()  # SIGKILL: nothing can clean up
    proc.wait(10)
    assert veth in clsact_devices()
    from pyroute2 import IPRoute

    from clovisor import tc

    with IPRoute() as ipr:
        assert tc.clean_stale(ipr) == [veth]
    assert veth not in clsact_devices()


@contextlib.contextmanager
def kafka_unavailable(stack, how: str) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Kafka stopped ("down"), or hung: its process stopped with its sockets open ("hung")."""
    if how == "down":
        stack.down(["kafka"])
        try:
            yield
        finally:
            stack.up(["kafka"])
        return
    (status,) = stack.status(["kafka"])
    broker = psutil.Process(status.pid)
    broker.suspend()
    try:
        yield
    finally:
        broker.resume()


@pytest.mark.parametrize("how", ["down", "hung"])
def test_a_kafka_outage_loses_no_span(stack, lab, cfg: Config, how: str) -> None:  # type: ignore[no-untyped-def]
    from clovisor.agent import Clovisor, Options
    from clovisor.discovery.local import LocalSource

    pod = lab.pods["life"]
    agent = Clovisor(cfg, [LocalSource(cfg)], Options(node="outage", reconcile_interval=0.2))
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    marker = uuid.uuid4().hex[:12]
    try:
        wait_until(lambda: "default/life" in agent.attached, 10, "life attached")
        with kafka_unavailable(stack, how):
            with socket.create_connection((pod.ip, 8090)) as sock:
                f = sock.makefile("rb")
                for i in range(300):
                    sock.sendall(request("GET", f"/?m={marker}&i={i}"))
                    assert read_response(f)[0] == 200
            wait_until(lambda: agent.kafka.stats.produced - agent.kafka.stats.delivered >= 300, 10, "spans buffered")
            assert agent.kafka.stats.dropped == 0
        wait_until(lambda: agent.kafka.stats.pending == 0, 90, "buffer drained after Kafka returned")
    finally:
        agent.stop()
        thread.join(10)
        agent.close()
    reader = SpanReader(cfg)
    try:
        found = reader.collect(marker, 300, timeout=60)
    finally:
        reader.close()
    assert sorted(int(s.http_url.rsplit("=", 1)[1]) for s in found) == list(range(300))


def test_the_kafka_buffer_is_bounded_in_bytes_and_delivers_what_it_took(stack, cfg: Config) -> None:  # type: ignore[no-untyped-def]
    from clovisor.export import KafkaSpanExporter
    from protos import records_pb2

    marker = uuid.uuid4().hex[:12]
    exporter = KafkaSpanExporter(cfg.kafka_bootstrap, buffer_spans=100_000, buffer_mib=1)
    accepted = []
    try:
        with kafka_unavailable(stack, "hung"):
            for i in range(2000):
                span = records_pb2.Span(
                    trace_id=uuid.uuid4().hex, span_id=f"{i + 1:016x}", service="buffer-test",
                    start_time_us=time.time_ns() // 1000, http_url=f"/?m={marker}&i={i}",
                )  # fmt: skip
                span.tags["padding"] = "x" * 1000
                if exporter.send_raw(span.trace_id.encode(), span.SerializeToString()):
                    accepted.append(i)
            assert 0 < len(accepted) < 1024 and exporter.stats.dropped == 2000 - len(accepted)
        assert exporter.flush(60) == 0
    finally:
        exporter.flush(5)
    reader = SpanReader(cfg)
    try:
        found = reader.collect(marker, len(accepted), timeout=60)
    finally:
        reader.close()
    assert sorted(int(s.http_url.rsplit("=", 1)[1]) for s in found) == accepted == list(range(len(accepted)))


DAEMONSET_CAPS = ("bpf", "perfmon", "net_admin")  # k8s/clovisor/daemonset.yaml's capabilities.add


def test_clovisor_traces_with_only_the_daemonsets_capabilities(stack, lab, cfg: Config) -> None:  # type: ignore[no-untyped-def]
    """Root, but only CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (and so no CAP_SYS_ADMIN or
    CAP_SYSLOG): the programs compile, load and attach, and the pod's requests become spans."""
    only = ",".join(["-all", *(f"+{cap}" for cap in DAEMONSET_CAPS)])
    limited = ["setpriv", f"--bounding-set={only}", f"--inh-caps={only}", f"--ambient-caps={only}", "--"]
    command = [str(ROOT / ".venv" / "bin" / "clovisor"), "run", "--discovery", "local", "--metrics-port", "0"]
    proc = subprocess.Popen([*limited, *command], stderr=subprocess.PIPE, text=True, cwd=ROOT)
    pod = lab.pods["life"]
    marker = uuid.uuid4().hex[:12]
    try:
        wait_attached(pod.host_veth, proc)
        effective = next(
            int(line.split()[1], 16) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
            if line.startswith("CapEff:")
        )  # fmt: skip
        assert effective == (1 << 39) | (1 << 38) | (1 << 12)  # CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN
        with socket.create_connection((pod.ip, 8090)) as sock:
            f = sock.makefile("rb")
            for i in range(5):
                sock.sendall(request("GET", f"/?m={marker}&i={i}"))
                assert read_response(f)[0] == 200
        reader = SpanReader(cfg)
        try:
            found = reader.collect(marker, 5, timeout=60)
        finally:
            reader.close()
        assert sorted(int(s.http_url.rsplit("=", 1)[1]) for s in found) == list(range(5))
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
