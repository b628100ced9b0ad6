"""What the Clovisor integration tests share: waiting, HTTP on a raw socket, reading spans back
from Kafka, pods with servers, and the module fixtures ``redis_client``, ``agent`` and
``spans`` (tests/integration/conftest.py offers them). A test module using ``agent`` defines
``lab`` (a ``clovisor.lab.Lab``): ``agent`` traces the lab's pods with an in-process Clovisor.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from clover import keys, topics
from clover.config import Config

ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate, timeout: float = 15.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_listening(pod, port: int) -> None:  # type: ignore[no-untyped-def]
    def up() -> bool:
        try:
            socket.create_connection((pod.ip, port), timeout=0.5).close()
            return True
        except OSError:
            return False

    wait_until(up, 10, f"{pod.name}:{port}")


@contextlib.contextmanager
def serving(cfg: Config, lab, servers: Sequence[tuple[object, Sequence[str]]]) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Runs each (pod, argv) in its pod, registers the pods and waits until every named port of
    each listens; kills the servers at the end."""
    procs = [subprocess.Popen(pod.exec(*argv), cwd=ROOT) for pod, argv in servers]  # type: ignore[attr-defined]
    try:
        pods = list({pod.name: pod for pod, _ in servers}.values())  # type: ignore[attr-defined]
        for pod in pods:
            lab.register(cfg, pod)
        for pod in pods:
            for port in pod.ports.values():  # type: ignore[attr-defined]
                wait_listening(pod, port)
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def call_from_pod(pod, ip: str, port: int, data: bytes) -> bytes:  # type: ignore[no-untyped-def]
    """Sends ``data`` from inside ``pod`` to ``ip:port`` and returns all it gets until the server closes."""
    script = (
        "import socket,sys\n"
        f"s=socket.create_connection(({ip!r},{port}))\n"
        f"s.sendall({data!r})\n"
        "while chunk:=s.recv(65536): sys.stdout.buffer.write(chunk)\n"
    )
    return subprocess.run(pod.exec(sys.executable, "-c", script), check=True, capture_output=True, timeout=20).stdout


@contextlib.contextmanager
def egress_traced(agent, redis_client, pod, server_ip: str, port: int) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """An egress match (``clovisor_egress_match``) for ``pod``'s calls to ``server_ip:port``, in force."""
    redis_client.rpush(keys.CLOVISOR_EGRESS_MATCH, f"{server_ip}:{port}:{pod.name}")
    try:
        ifindex = agent.attached[f"{pod.namespace}/{pod.name}"].ifindex
        wait_until(lambda: (server_ip, port) in agent.datapath.egress_of(ifindex), 10, f"egress rule on {pod.name}")
        yield
    finally:
        redis_client.delete(keys.CLOVISOR_EGRESS_MATCH)


class SpanReader:
    """Reads clover.spans from the start, keeping the spans of this test run."""

    def __init__(self, cfg: Config) -> None:
        from confluent_kafka import Consumer

        self.consumer = Consumer(
            {
                "bootstrap.servers": cfg.kafka_bootstrap,
                "group.id": f"clovisor-test-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self.consumer.subscribe([topics.SPANS])
        self.spans: list[object] = []

    def collect(self, marker: str, count: int, timeout: float = 20.0) -> list[object]:
        """Spans whose URL contains ``marker``; waits for ``count`` then a little longer for extras."""
        return self.collect_where(lambda s: marker in s.http_url or s.tags.get("marker") == marker, count, timeout)

    def collect_where(self, match: Callable[[object], bool], count: int, timeout: float = 20.0) -> list[object]:
        """The spans ``match`` accepts; waits for ``count`` then a second longer for extras."""
        from protos import records_pb2

        deadline = time.monotonic() + timeout
        settle: float | None = None
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                span = records_pb2.Span()
                span.ParseFromString(msg.value())
                self.spans.append(span)
            found = [s for s in self.spans if match(s)]
            if len(found) >= count:
                settle = settle or time.monotonic() + 1.0
                if time.monotonic() >= settle:
                    return found
        return [s for s in self.spans if match(s)]

    def close(self) -> None:
        self.consumer.close()


def request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: lab"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_response(f) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    status = int(f.readline().split()[1])
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int(f.readline().strip(), 16)
            if size == 0:
                f.readline()
                return status, body
            body += f.read(size)
            f.readline()
    if status in (204, 304):
        return status, b""
    return status, f.read(int(headers.get("content-length", "0")))


@pytest.fixture(scope="module")
def redis_client(stack, cfg: Config):  # type: ignore[no-untyped-def]
    """Redis, with no Clovisor setting left from an earlier test (and none left after)."""
    import redis

    settings = (
        keys.CLOVISOR_LABELS,
        keys.CLOVISOR_EGRESS_MATCH,
        keys.CLOVISOR_EGRESS_MATCH_ORIGINAL,
        keys.CLOVISOR_PROTO_CFG,
        keys.CLOVISOR_JAEGER_COLLECTOR,
        keys.CLOVISOR_JAEGER_AGENT,
    )
    client = redis.Redis.from_url(cfg.redis_url)
    client.delete(*settings)
    yield client
    client.delete(*settings)
    client.close()


@pytest.fixture(scope="module")
def agent(lab, redis_client, cfg: Config) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """Clovisor in a thread of the test, tracing the lab's pods (those of namespace default)."""
    from clovisor.agent import Clovisor, Options
    from clovisor.discovery.local import LocalSource

    clovisor = Clovisor(
        cfg,
        [LocalSource(cfg)],
        Options(node="test-node", exchange_timeout=2.0, settings_interval=0.2, reconcile_interval=0.2),
    )
    thread = threading.Thread(target=clovisor.run, daemon=True)
    thread.start()
    pods = {f"{p.namespace}/{p.name}" for p in lab.pods.values() if p.namespace == "default"}
    wait_until(lambda: pods <= set(clovisor.attached), 10, f"{', '.join(sorted(pods))} attached")
    yield clovisor
    clovisor.stop()
    thread.join(10)
    clovisor.close()


@pytest.fixture(scope="module")
def spans(cfg: Config, stack) -> Iterator[SpanReader]:  # type: ignore[no-untyped-def]
    reader = SpanReader(cfg)
    yield reader
    reader.close()
