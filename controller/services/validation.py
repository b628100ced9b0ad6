"""The validation service: JMeter test plans (GenTest), runs (start, stop, status) and their
results, relayed to the validation master."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any, TypeVar

from clover.config import Config
from controller import schemas
from controller.errors import ApiError, Problem, bad_request, invalid
from controller.services.grpc_status import http_status
from controller.validate import check
from validation import client as validation
from validation.plan import PlanError, parse_plan

R_TYPES = {"log": "log", "summary": "summary", "detail": "results", "results": "results", "jtl": "results"}
RESULT_FORMATS = ("", "csv", "json", "text")

T = TypeVar("T")


def _relay(call: Callable[[], T]) -> T:
    try:
        return call()
    except validation.ValidationError as exc:
        raise ApiError(http_status(exc.code), str(exc)) from None


class ValidationService:
    def __init__(self, cfg: Config):
        self.cfg = cfg

    def gen_test(self, body: Any, name: str | None = None) -> str:
        if not isinstance(body, Mapping):
            raise invalid("Invalid value in test plan json/yaml", [Problem(None, "the body must be a test plan")])
        try:
            plan = parse_plan(dict(body), name)
        except PlanError as exc:
            raise invalid(
                "Invalid value in test plan json/yaml", [Problem(f or None, m) for f, m in exc.problems]
            ) from None
        return _relay(lambda: validation.gen_test(self.cfg.validation_grpc, plan))

    def start_test(self, body: Mapping[str, Any] | None) -> validation.Started:
        check(schemas.JMETER_START, body, "Invalid value in json/yaml")
        body = body or {}
        slaves = body.get("slave_list", "")
        slave_ips = [s.strip() for s in (slaves.split(",") if isinstance(slaves, str) else slaves) if s.strip()]
        num_slaves = int(body.get("num_slaves") or 0)
        test_plan = str(body.get("test_plan", ""))
        return _relay(
            lambda: validation.start_test(
                self.cfg.validation_grpc, num_slaves=num_slaves, test_plan=test_plan, slave_ips=slave_ips
            )
        )

    def results(self, r_type: str, fmt: str = "") -> validation.Results:
        if r_type not in R_TYPES:
            raise bad_request(f"result type {r_type!r} must be one of {', '.join(R_TYPES)}", "r_type")
        if fmt not in RESULT_FORMATS:
            raise bad_request(f"format {fmt!r} must be one of csv, json, text", "format")
        return _relay(lambda: validation.get_results(self.cfg.validation_grpc, R_TYPES[r_type], fmt))

    def test_status(self) -> dict[str, Any]:
        status = _relay(lambda: validation.get_status(self.cfg.validation_grpc))
        return {**asdict(status), "slave_hosts": list(status.slave_hosts), "done": status.done}

    def stop_test(self, now: bool = False) -> str:
        return _relay(lambda: validation.stop_test(self.cfg.validation_grpc, now=now))
