"""A small application traced only by OpenTelemetry's standard instrumentation, for tests.

Three services, each its own process on 127.0.0.1 (see services.py and plan.py): ``frontend``
(WSGI server; per request 11 HTTP calls to ``backend`` with requests and one gRPC call to
``greeter``), ``backend`` (WSGI server answering 200, 404 or 500 by path) and ``greeter`` (gRPC
server answering NOT_FOUND for one user in four). Use::

    with OtelApp(cfg.otlp_http_url, Ports.from_base(27180), tmp_path) as app:
        expected = app.send(20)
    # leaving the block stopped the services, which exported every span first

or ``expected = run_app(cfg.otlp_http_url, ports, tmp_path, count=20)``. ``expected`` (plan.Expected)
holds the exact spans the trace backend then has, per service and kind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType

import requests

from tests.otel_app.plan import BACKEND, FRONTEND, GREETER, ROLES, Expected, SideCounts, frontend_target
from tests.waiting import wait_until

__all__ = ["Expected", "OtelApp", "Ports", "SideCounts", "run_app"]

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
SEMCONV_MODES = ("", "http", "http/dup")  # OTEL_SEMCONV_STABILITY_OPT_IN: old names, new names, both


@dataclass(frozen=True)
class Ports:
    frontend: int
    backend: int
    greeter: int

    @classmethod
    def from_base(cls, base: int) -> Ports:
        return cls(base, base + 1, base + 2)


class OtelApp:
    """The three services as child processes. ``send(n)`` makes n frontend requests and returns
    the spans made so far; ``stop()`` (or leaving the ``with`` block) ends the processes, each
    exporting its spans first, and fails if one does not exit cleanly."""

    def __init__(self, otlp_http_url: str, ports: Ports, log_dir: Path, *, semconv: str = "", suffix: str = ""):
        if semconv not in SEMCONV_MODES:
            raise ValueError(f"semconv {semconv!r}: use one of {SEMCONV_MODES}")
        self.otlp_http_url = otlp_http_url
        self.ports = ports
        self.log_dir = log_dir
        self.semconv = semconv
        self.names = {role: role + suffix for role in ROLES}
        self.expected = Expected(
            names=dict(self.names), addresses={self.names[r]: f"{HOST}:{getattr(ports, r)}" for r in ROLES}
        )
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def frontend_url(self) -> str:
        return f"http://{HOST}:{self.ports.frontend}"

    def _log(self, role: str) -> Path:
        return self.log_dir / f"otel-app-{role}.log"

    def _log_tail(self, role: str) -> str:
        lines = self._log(role).read_text(errors="replace").splitlines()
        return "\n".join(lines[-20:])

    def _spawn(self, role: str, *extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env["CLOVER_OTLP_HTTP_URL"] = self.otlp_http_url
        if self.semconv:
            env["OTEL_SEMCONV_STABILITY_OPT_IN"] = self.semconv
        port = str(getattr(self.ports, role))
        command = [sys.executable, "-m", "tests.otel_app.services", role, self.names[role], port, *extra]
        with self._log(role).open("wb") as log:
            self.processes[role] = subprocess.Popen(
                command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def _listening(self, role: str) -> bool:
        process = self.processes[role]
        if process.poll() is not None:
            raise RuntimeError(f"otel app {role} exited with {process.returncode}:\n{self._log_tail(role)}")
        try:
            with socket.create_connection((HOST, getattr(self.ports, role)), timeout=1):
                return True
        except OSError:
            return False

    def start(self) -> None:
        for role in ROLES:  # a process already listening there would answer in the service's place
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
                try:
                    probe.bind((HOST, getattr(self.ports, role)))
                except OSError as exc:
                    raise RuntimeError(f"otel app {role}: port {getattr(self.ports, role)} is taken ({exc})") from None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._spawn(GREETER)
            self._spawn(BACKEND)
            backend, greeter = f"http://{HOST}:{self.ports.backend}", f"{HOST}:{self.ports.greeter}"
            self._spawn(FRONTEND, "--backend", backend, "--greeter", greeter)
            for role in ROLES:
                wait_until(partial(self._listening, role), timeout=60, what=f"otel app {role} listening")
        except BaseException:
            self.stop(check=False)
            raise

    def send(self, count: int) -> Expected:
        """Make ``count`` frontend requests, one after the other; each must get its planned status."""
        for _ in range(count):
            index = self.expected.requests
            target = frontend_target(index)
            status = self.expected.add_request(index)
            response = requests.get(f"{self.frontend_url}{target}", timeout=60)
            if response.status_code != status:
                raise AssertionError(f"GET {target} answered {response.status_code}, not {status}: {response.text}")
        return self.expected

    def stop(self, check: bool = True) -> None:
        """SIGTERM each process and wait for it; with ``check``, fail unless each exited 0."""
        failures = []
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for role, process in self.processes.items():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
                failures.append(f"{role} did not stop on SIGTERM within 30 s")
                continue
            if process.returncode != 0:
                failures.append(f"{role} exited with {process.returncode}:\n{self._log_tail(role)}")
        self.processes.clear()
        if check and failures:
            raise AssertionError("otel app: " + "; ".join(failures))

    def __enter__(self) -> OtelApp:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop(check=kind is None)


def run_app(
    otlp_http_url: str, ports: Ports, log_dir: Path, *, count: int, semconv: str = "", suffix: str = ""
) -> Expected:
    """Start the application, make ``count`` frontend requests, stop it (every span exported)."""
    with OtelApp(otlp_http_url, ports, log_dir, semconv=semconv, suffix=suffix) as app:
        app.send(count)
    return app.expected
