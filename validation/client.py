"""Calling the validation service over gRPC: what cloverctl uses now and the controller relays.

Every function takes the service's ``host:port`` (``Config.validation_grpc``) and returns the
reply's fields; a refusal raises ValidationError carrying the gRPC status and the service's
text (which starts with the original reply, e.g. "Failed to generate test plan: ...").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc

from protos import jmeter_pb2, jmeter_pb2_grpc
from validation.plan import TestPlan
from validation.protocol import plan_to_proto
from validation.results import LabelSummary

MAX_MESSAGE = 256 * 2**20
_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
FINAL_STATES = ("finished", "failed", "stopped")


class ValidationError(RuntimeError):
    """The service refused a request, or could not be reached (code UNAVAILABLE)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Started:
    message: str
    pid: int
    run_id: str


@dataclass(frozen=True)
class Results:
    message: str
    content: str
    run_id: str
    summary: list[LabelSummary] = field(default_factory=list)


@dataclass(frozen=True)
class RunStatus:
    state: str
    run_id: str = ""
    pid: int = 0
    test_plan: str = ""
    num_slaves: int = 0
    slave_hosts: tuple[str, ...] = ()
    samples: int = 0
    errors: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    exit_code: int = 0
    detail: str = ""

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES


@contextmanager
def _stub(target: str) -> Iterator[jmeter_pb2_grpc.ControllerStub]:
    channel = grpc.insecure_channel(target, options=_OPTIONS)
    try:
        yield jmeter_pb2_grpc.ControllerStub(channel)
    finally:
        channel.close()


def _call(target: str, rpc: str, request: Any, timeout: float) -> Any:
    with _stub(target) as stub:
        try:
            return getattr(stub, rpc)(request, timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            details = exc.details() or str(code)
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                details = f"Error connecting to the validation service at {target} via gRPC: {details}"
            raise ValidationError(code, details) from None


def gen_test(target: str, plan: TestPlan, timeout: float = 30) -> str:
    """Send a checked plan to the master (GenTest); returns "Generated test plan"."""
    reply = _call(target, "GenTest", plan_to_proto(plan), timeout)
    return str(reply.message)


def start_test(
    target: str, num_slaves: int = 0, test_plan: str = "", slave_ips: Sequence[str] = (), timeout: float = 60
) -> Started:
    """Start a run (StartTest); returns at once with "Started jmeter on pid: N"."""
    request = jmeter_pb2.TestParams(num_slaves=num_slaves, test_plan=test_plan, slave_ips=list(slave_ips))
    reply = _call(target, "StartTest", request, timeout)
    return Started(reply.message, reply.pid, reply.run_id)


def _summary(row: jmeter_pb2.LabelSummary) -> LabelSummary:
    return LabelSummary(**{f: getattr(row, f) for f in LabelSummary.__dataclass_fields__})


def get_results(target: str, r_file: str = "log", r_format: str = "", timeout: float = 120) -> Results:
    """The last run's summary log ("log"), JTL ("detail") or computed summary ("summary")."""
    reply = _call(target, "GetResults", jmeter_pb2.JResults(r_file=r_file, r_format=r_format), timeout)
    return Results(reply.message, reply.content, reply.run_id, [_summary(r) for r in reply.summary])


def get_status(target: str, timeout: float = 10) -> RunStatus:
    """The state of the current or last run (state "idle" before the first)."""
    s = _call(target, "GetStatus", jmeter_pb2.StatusRequest(), timeout)
    return RunStatus(
        state=s.state,
        run_id=s.run_id,
        pid=s.pid,
        test_plan=s.test_plan,
        num_slaves=s.num_slaves,
        slave_hosts=tuple(s.slave_hosts),
        samples=s.samples,
        errors=s.errors,
        started_at=s.started_at,
        finished_at=s.finished_at,
        exit_code=s.exit_code,
        detail=s.detail,
    )


def stop_test(target: str, now: bool = False, timeout: float = 90) -> str:
    """Stop the running test; returns "Stopped jmeter on pid: N"."""
    return str(_call(target, "StopTest", jmeter_pb2.StopRequest(now=now), timeout).message)


def wait_for_run(
    target: str,
    run_id: str,
    timeout: float | None = None,
    poll: float = 0.5,
    progress: Callable[[RunStatus], None] | None = None,
) -> RunStatus:
    """Poll GetStatus until run ``run_id`` has ended; raises TimeoutError after ``timeout`` s."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = get_status(target)
        if status.run_id != run_id:
            raise ValidationError(grpc.StatusCode.NOT_FOUND, f"run {run_id} is not the service's current run")
        if progress is not None:
            progress(status)
        if status.done:
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {status.state} after {timeout:.0f}s")
        time.sleep(poll)
