"""The validation service: gRPC ``jmeter.Controller`` (the original JMeter master's service).

``python -m validation.server [--listen HOST:PORT] [--work-dir DIR]``; defaults from
``Config.from_env()`` (``CLOVER_VALIDATION_GRPC``) and ``<state dir>/validation/data``.

Work directory::

    tests/<plan>.jmx, tests/<plan>.yaml   plans made by GenTest (the yaml is the checked plan)
    runs/<run id>/                        one directory per run (see validation.runner)
    runs/last                             the id of the latest run

One run at a time. SIGTERM stops a running test (JMeter "StopTestNow") and its local JMeter
servers, then the service.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import grpc
import yaml

from clover import pods
from clover.config import Config, ConfigError
from protos import jmeter_pb2, jmeter_pb2_grpc
from stack.java import JavaNotFound
from validation import protocol
from validation.client import MAX_MESSAGE
from validation.jmeter import JMeter, JMeterMissing
from validation.jmx import render_jmx
from validation.plan import DEFAULT_PLAN_NAME, PlanError, TestPlan, plan_name, plan_to_data
from validation.results import (
    JtlCounter,
    LabelSummary,
    format_summary,
    read_jtl,
    samples_json,
    summarise,
    summary_csv,
    summary_json,
)
from validation.runner import Run, RunError, RunInfo, new_run_id, prune_runs

log = logging.getLogger("clover.validation")

GRPC_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
DETAIL_FILES = ("", "detail", "results", "jtl")
R_FILES = ("log", "detail", "results", "summary")
KEEP_RUNS = 50


class ServiceError(Exception):
    """A request the service refuses: a gRPC status and the text for the caller."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def work_dir_of(cfg: Config) -> Path:
    return cfg.state_dir / "validation" / "data"


def pod_resolver(cfg: Config) -> Callable[[str], str]:
    """Host -> address through the local pod registry (the cluster's DNS when running locally);
    IP literals and names no local pod serves are left as they are."""

    def resolve(host: str) -> str:
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(host)
            return host
        try:
            return pods.resolve(cfg, host)
        except pods.UnknownService:
            return host

    return resolve


JMETER_RMI_PORT = 1099  # where JMeter looks for a server given without a port


def _split_slave(raw: str, source: str) -> tuple[str, str]:
    """(host, port or "") of a ``host[:port]`` entry of slave_ips or CLOVER_JMETER_SLAVES."""
    host, sep, port = raw.rpartition(":")
    if not sep:
        host, port = raw, ""
    if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT, f"{protocol.START_FAILED}: {source}: {raw!r} is not host[:port]"
        )
    return host, port


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def resolve_slaves(entries: Sequence[str], source: str) -> list[str]:
    """The JMeter servers ``entries`` name. An IP literal stays as given; a DNS name becomes every
    address it resolves to now (a headless Service: every ready slave pod), IPv4 before IPv6,
    in address order, with the entry's port or 1099. Each server is listed once."""
    hosts: list[str] = []
    for raw in (e.strip() for e in entries if e.strip()):
        if _is_ip(raw):
            hosts.append(raw)
            continue
        host, port = _split_slave(raw, source)
        if _is_ip(host):
            hosts.append(f"{host}:{port}" if port else host)
            continue
        try:
            infos = socket.getaddrinfo(host, int(port or JMETER_RMI_PORT), type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{protocol.START_FAILED}: {source}: JMeter server {host!r} does not resolve ({exc})",
            ) from None
        addresses = sorted({ipaddress.ip_address(str(info[4][0])) for info in infos}, key=lambda a: (a.version, a))
        for address in addresses:
            shown = str(address) if address.version == 4 else f"[{address}]"
            hosts.append(f"{shown}:{port or JMETER_RMI_PORT}")
    return list(dict.fromkeys(hosts))


class ValidationService:
    """Plans, runs and results; the gRPC servicer below only translates."""

    def __init__(self, cfg: Config, work_dir: Path, resolve: Callable[[str], str] | None = None):
        self.cfg = cfg
        self.work_dir = work_dir
        self.plans = work_dir / "tests"
        self.runs = work_dir / "runs"
        self.plans.mkdir(parents=True, exist_ok=True)
        self.runs.mkdir(parents=True, exist_ok=True)
        self.resolve = resolve if resolve is not None else pod_resolver(cfg)
        self._lock = threading.Lock()
        self._run: Run | None = None
        self._counters: dict[str, JtlCounter] = {}
        self._count_lock = threading.Lock()

    # -- plans ---------------------------------------------------------------------------------

    def generate(self, plan: TestPlan) -> Path:
        """Write ``plan`` as JMX (and its checked yaml beside it); nothing is written on error."""
        jmx = render_jmx(plan, self.resolve)
        target = self.plans / plan.name
        for path, text in (
            (target, jmx),
            (target.with_suffix(".yaml"), yaml.safe_dump(plan_to_data(plan), sort_keys=False)),
        ):
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        log.info("generated %s: %d requests, %d threads", target, len(plan.requests), plan.load.num_threads)
        return target

    # -- runs ----------------------------------------------------------------------------------

    def _slaves(self, num_slaves: int, slave_ips: Sequence[str]) -> tuple[list[str], int]:
        """(remote hosts, local servers to start) for a StartTest request."""
        fail = protocol.START_FAILED
        if num_slaves < 0:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT, f"{fail}: num_slaves must be 0 or more, not {num_slaves}"
            )
        given = resolve_slaves(slave_ips, "slave_ips")
        if given:
            if num_slaves > len(given):
                raise ServiceError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{fail}: num_slaves is {num_slaves} but slave_ips names only {len(given)} servers",
                )
            return (given[:num_slaves] if num_slaves else given), 0
        if num_slaves == 0:
            return [], 0
        configured = resolve_slaves(self.cfg.jmeter_slaves, "CLOVER_JMETER_SLAVES")
        if configured:
            if num_slaves > len(configured):
                raise ServiceError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{fail}: {num_slaves} slaves requested but only {len(configured)} found"
                    f" (CLOVER_JMETER_SLAVES={','.join(self.cfg.jmeter_slaves)})",
                )
            return configured[:num_slaves], 0
        return [], num_slaves

    def start(self, test_plan: str, num_slaves: int = 0, slave_ips: Sequence[str] = ()) -> Run:
        fail = protocol.START_FAILED
        try:
            name = plan_name(test_plan or None)
        except PlanError as exc:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"{fail}: {exc}") from None
        jmx = self.plans / name
        if not jmx.exists():
            raise ServiceError(
                grpc.StatusCode.NOT_FOUND,
                f"{fail}: there is no test plan {name}; create one first (cloverctl create testplan -f <yaml>)",
            )
        remote, local = self._slaves(num_slaves, slave_ips)
        try:
            jmeter = JMeter.find(self.cfg.jmeter_dir, self.cfg.java_home)
        except (JMeterMissing, JavaNotFound) as exc:
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, f"{fail}: {exc}") from None
        with self._lock:
            if self._run is not None and not self._run.done:
                info = self._run.info
                raise ServiceError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{fail}: a test is already running (run {info.run_id}, pid {info.pid}); stop it first",
                )
            for old in prune_runs(self.runs, KEEP_RUNS - 1):
                log.info("removed old run %s (keeping the last %d)", old, KEEP_RUNS)
            run_id = new_run_id()
            try:
                run = Run(
                    jmeter, jmx, self.runs / run_id, name, remote_hosts=remote, local_slaves=local,
                    rmi_port=self.cfg.jmeter_rmi_port, rmi_host=self.cfg.jmeter_rmi_host,
                )  # fmt: skip
            except (RunError, OSError) as exc:
                raise ServiceError(grpc.StatusCode.INTERNAL, f"{fail}: {exc}") from None
            self._run = run
            (self.runs / ".last.tmp").write_text(run_id)
            os.replace(self.runs / ".last.tmp", self.runs / "last")
        log.info("run %s: %s, pid %d, servers %s", run_id, name, run.info.pid, ",".join(run.info.slave_hosts) or "none")
        return run

    def _last_dir(self) -> Path | None:
        with self._lock:
            if self._run is not None:
                return self._run.root
        try:
            run_id = (self.runs / "last").read_text().strip()
        except FileNotFoundError:
            return None
        return self.runs / run_id if run_id and (self.runs / run_id).is_dir() else None

    def status(self) -> tuple[RunInfo | None, int, int]:
        """The current or last run, and its samples and failed samples so far."""
        with self._lock:
            run = self._run
        if run is not None:
            info = replace(run.info, slave_hosts=list(run.info.slave_hosts))
        else:
            root = self._last_dir()
            if root is None:
                return None, 0, 0
            try:
                info = RunInfo.load(root / "run.json")
            except (OSError, ValueError, TypeError):
                return None, 0, 0
            if info.state in ("starting", "running"):
                info.state = "failed"
                info.detail = "interrupted: the validation service stopped during the run"
        with self._count_lock:
            counter = self._counters.get(info.run_id)
            if counter is None:
                self._counters = {info.run_id: JtlCounter(self.runs / info.run_id / "default.jtl")}
                counter = self._counters[info.run_id]
            samples, errors = counter.update()
        return info, samples, errors

    def stop(self, now: bool) -> RunInfo:
        with self._lock:
            run = self._run
        if run is None or run.done:
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, f"{protocol.STOP_FAILED}: no test is running")
        run.stop(now=now)
        return run.info

    def results(self, r_file: str, r_format: str) -> tuple[str, list[LabelSummary]]:
        fail = protocol.RETRIEVE_FAILED
        r_file, r_format = r_file.strip().lower(), r_format.strip().lower()
        if r_file not in (*R_FILES, *DETAIL_FILES):
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT, f"{fail}: r_file {r_file!r} is not one of {', '.join(R_FILES)}"
            )
        root = self._last_dir()
        if root is None:
            raise ServiceError(grpc.StatusCode.NOT_FOUND, f"{fail}: no test has been run yet")
        if r_file == "log":
            path = root / "jmeter.log"
            return (path.read_text(errors="replace") if path.exists() else ""), []
        if r_file == "summary":
            if r_format not in ("", "text", "csv", "json"):
                raise ServiceError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{fail}: r_format {r_format!r} is not text, csv or json"
                )
            rows = summarise(read_jtl(root / "default.jtl"))
            text = {"csv": summary_csv, "json": summary_json}.get(r_format, format_summary)(rows)
            return text, rows
        if r_format not in ("", "csv", "json"):
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"{fail}: r_format {r_format!r} is not csv or json")
        jtl = root / "default.jtl"
        size = jtl.stat().st_size if jtl.exists() else 0
        if size > MAX_MESSAGE // 2:
            raise ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{fail}: the JTL is {size / 2**20:.0f} MiB, too large for one reply; read {jtl} on the master",
            )
        if r_format == "json":
            return samples_json(read_jtl(jtl)), []
        return (jtl.read_text(errors="replace") if jtl.exists() else ""), []

    def shutdown(self) -> None:
        with self._lock:
            run = self._run
        if run is not None and not run.done:
            log.info("stopping run %s", run.info.run_id)
            run.stop(now=True, grace=10)


def _summary_message(row: LabelSummary) -> jmeter_pb2.LabelSummary:
    return jmeter_pb2.LabelSummary(**{f: getattr(row, f) for f in LabelSummary.__dataclass_fields__})


class Servicer(jmeter_pb2_grpc.ControllerServicer):  # type: ignore[misc]  # protoc's gRPC base is untyped
    """gRPC in and out; failures become status codes with the original texts."""

    def __init__(self, service: ValidationService):
        self.service = service

    @staticmethod
    def _abort(context: grpc.ServicerContext, exc: ServiceError) -> NoReturn:
        log.warning("%s", exc)
        context.abort(exc.code, str(exc))
        raise exc  # context.abort raises; this only tells the type checker

    def GenTest(self, request: jmeter_pb2.ConfigJmeter, context: grpc.ServicerContext) -> jmeter_pb2.JmeterReply:
        try:
            plan = protocol.plan_from_proto(request)
        except PlanError as exc:
            self._abort(context, ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"{protocol.GEN_FAILED}: {exc}"))
        try:
            self.service.generate(plan)
        except OSError as exc:
            self._abort(context, ServiceError(grpc.StatusCode.INTERNAL, f"{protocol.GEN_FAILED}: {exc}"))
        return jmeter_pb2.JmeterReply(message=protocol.GENERATED)

    def StartTest(self, request: jmeter_pb2.TestParams, context: grpc.ServicerContext) -> jmeter_pb2.JmeterReply:
        try:
            run = self.service.start(
                request.test_plan or DEFAULT_PLAN_NAME, request.num_slaves, list(request.slave_ips)
            )
        except ServiceError as exc:
            self._abort(context, exc)
        return jmeter_pb2.JmeterReply(
            message=protocol.STARTED.format(pid=run.info.pid), pid=run.info.pid, run_id=run.info.run_id
        )

    def GetResults(self, request: jmeter_pb2.JResults, context: grpc.ServicerContext) -> jmeter_pb2.JmeterReply:
        try:
            content, rows = self.service.results(request.r_file, request.r_format)
            info, _, _ = self.service.status()
        except ServiceError as exc:
            self._abort(context, exc)
        return jmeter_pb2.JmeterReply(
            message=protocol.RETRIEVED + content,
            content=content,
            run_id=info.run_id if info else "",
            summary=[_summary_message(r) for r in rows],
        )

    def GetStatus(self, request: jmeter_pb2.StatusRequest, context: grpc.ServicerContext) -> jmeter_pb2.TestStatus:
        info, samples, errors = self.service.status()
        if info is None:
            return jmeter_pb2.TestStatus(state="idle")
        return jmeter_pb2.TestStatus(
            state=info.state,
            run_id=info.run_id,
            pid=info.pid,
            test_plan=info.test_plan,
            num_slaves=info.num_slaves,
            slave_hosts=info.slave_hosts,
            samples=samples,
            errors=errors,
            started_at=info.started_at,
            finished_at=info.finished_at,
            exit_code=info.exit_code,
            detail=info.detail,
        )

    def StopTest(self, request: jmeter_pb2.StopRequest, context: grpc.ServicerContext) -> jmeter_pb2.JmeterReply:
        try:
            info = self.service.stop(request.now)
        except ServiceError as exc:
            self._abort(context, exc)
        return jmeter_pb2.JmeterReply(message=protocol.STOPPED.format(pid=info.pid), pid=info.pid, run_id=info.run_id)


def serve(service: ValidationService, listen: str) -> tuple[grpc.Server, int]:
    """Start the gRPC server on ``listen`` (host:port; port 0 picks one); returns it and its port.
    Raises RuntimeError if it cannot bind."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=GRPC_OPTIONS)
    jmeter_pb2_grpc.add_ControllerServicer_to_server(Servicer(service), server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise RuntimeError(f"cannot listen on {listen}")
    server.start()
    return server, port


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m validation.server", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", help="host:port for gRPC (default: CLOVER_VALIDATION_GRPC)")
    parser.add_argument("--work-dir", type=Path, help="plans and runs (default: <state dir>/validation/data)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = Config.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    listen = args.listen or cfg.validation_grpc
    service = ValidationService(cfg, (args.work_dir or work_dir_of(cfg)).resolve())
    try:
        server, _ = serve(service, listen)
    except RuntimeError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    log.info("validation service on %s, work dir %s, JMeter home %s", listen, service.work_dir, cfg.jmeter_dir)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopping.wait()
    service.shutdown()
    server.stop(grace=5).wait()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
