"""``TestPlan`` <-> the ``ConfigJmeter`` message, and the reply texts of the original service."""

from __future__ import annotations

from typing import Any

from protos import jmeter_pb2
from validation.plan import PlanError, TestPlan, parse_plan

# The original service's reply texts; failures carry them as the start of the gRPC details.
GENERATED = "Generated test plan"
GEN_FAILED = "Failed to generate test plan"
STARTED = "Started jmeter on pid: {pid}"
START_FAILED = "Failed to start test"
RETRIEVED = "Retrieved all results\n"
RETRIEVE_FAILED = "Failed to retrieve results"
STOPPED = "Stopped jmeter on pid: {pid}"
STOP_FAILED = "Failed to stop test"


def plan_to_proto(plan: TestPlan) -> jmeter_pb2.ConfigJmeter:
    """The GenTest request for ``plan``: parallel repeated fields, one entry per request."""
    msg = jmeter_pb2.ConfigJmeter(
        num_threads=plan.load.num_threads,
        loops=plan.load.loops,
        ramp_time=plan.load.ramp_time,
        duration=plan.load.duration,
        test_plan=plan.name,
    )
    for r in plan.requests:
        msg.url_list.append(r.full_url)
        msg.url_names.append(r.name)
        msg.url_protocols.append(r.protocol)
        msg.url_methods.append(r.method)
        msg.url_agents.append(r.user_agent or "")
        msg.url_headers.append(jmeter_pb2.Headers(headers=[jmeter_pb2.Header(name=n, value=v) for n, v in r.headers]))
        msg.url_bodies.append(r.body if r.body is not None else "")
    return msg


def _at(values: Any, i: int) -> Any:
    return values[i] if i < len(values) else None


def plan_from_proto(msg: jmeter_pb2.ConfigJmeter) -> TestPlan:
    """Check a GenTest request with the same rules as the yaml; PlanError names the yaml field."""
    n = len(msg.url_list)
    problems: list[tuple[str, str]] = []
    if len(msg.url_names) != n:
        problems.append(("url_names", f"has {len(msg.url_names)} entries for {n} urls: every url needs a name"))
    for field in ("url_protocols", "url_methods", "url_agents", "url_headers", "url_bodies"):
        count = len(getattr(msg, field))
        if count not in (0, n):
            problems.append((field, f"has {count} entries for {n} urls (give one per url, or none)"))
    if problems:
        raise PlanError(problems)
    urls: list[dict[str, Any]] = []
    for i in range(n):
        entry: dict[str, Any] = {"name": msg.url_names[i], "url": msg.url_list[i]}
        if _at(msg.url_protocols, i):
            entry["protocol"] = msg.url_protocols[i]
        if _at(msg.url_methods, i):
            entry["method"] = msg.url_methods[i]
        if _at(msg.url_agents, i):
            entry["user-agent"] = msg.url_agents[i]
        headers = _at(msg.url_headers, i)
        if headers is not None and headers.headers:
            names = [h.name for h in headers.headers]
            if len(set(names)) != len(names):
                raise PlanError([(f"url_list[{i}].headers", "names a header twice")])
            entry["headers"] = {h.name: h.value for h in headers.headers}
        if _at(msg.url_bodies, i):
            entry["body"] = msg.url_bodies[i]
        urls.append(entry)
    data = {
        "load_spec": {
            "num_threads": msg.num_threads,
            "loops": msg.loops,
            "ramp_time": msg.ramp_time,
            "duration": msg.duration,
        },
        "url_list": urls,
    }
    return parse_plan(data, msg.test_plan or None)
