"""``cloverctl validate``'s logic on answers the test makes: the checks each answer gives, the
table, the JSON, the closing messages and the exit code; and the original's ``provider``
commands, which answer why they are not here. The real stack: tests/integration/test_stack_validation.py."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from types import SimpleNamespace as NS
from typing import Any

import pytest
from click.testing import CliRunner

from clover.config import Config
from cloverctl import stack_checks
from cloverctl.main import cli
from cloverctl.stack_checks import Answer, Check, NoAnswer
from sdc import topology

PODS = topology.POD_NAMES


def target(job: str, health: str = "up", pod: str | None = None, error: str = "") -> dict[str, Any]:
    labels = {"job": job, "instance": f"127.0.0.1:{9000 + len(job)}"}
    if pod:
        labels.update({"pod": pod, "sdc": "true"})
    return {"labels": labels, "health": health, "lastError": error, "scrapeUrl": "http://x/metrics"}


def healthy_targets() -> list[dict[str, Any]]:
    return [target("prometheus")] + [target("clover", pod=p) for p in PODS]


def fetcher(answers: Mapping[str, Answer | Exception]) -> stack_checks.Fetch:
    def fetch(url: str) -> Answer:
        answer = answers[url]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return fetch


def test_expected_jobs_are_the_job_names_of_the_configuration() -> None:
    text = "scrape_configs:\n  - job_name: a\n    static_configs: []\n  - job_name: b\n"
    assert stack_checks.expected_jobs(text) == ["a", "b"]
    assert stack_checks.expected_jobs("global: {}\n") == []


def test_every_target_up_with_every_job_and_pod_passes() -> None:
    checks = stack_checks.evaluate_targets(healthy_targets(), ["prometheus", "clover"], PODS, "conf.yml")
    assert [(c.check, c.passed, c.detail) for c in checks] == [
        ("scrape jobs", True, "prometheus, clover (from conf.yml)"),
        ("targets up", True, "11 of 11 up"),
        ("chain targets up", True, "all 10 pods of the chain scraped and up"),
    ]


def test_a_missing_job_a_down_target_and_an_unscraped_pod_each_fail_and_are_named() -> None:
    targets = [target("prometheus")] + [
        target("clover", "down", p, "connection refused") if p == "http-lb-v2" else target("clover", pod=p)
        for p in PODS
        if p != "clover-server3"
    ]
    checks = stack_checks.evaluate_targets(targets, ["prometheus", "clover", "node"], PODS, "conf.yml")
    assert [(c.check, c.result, c.detail) for c in checks] == [
        ("scrape jobs", "FAIL", "no target for job node (jobs of conf.yml)"),
        ("targets up", "FAIL", "9 of 10 up; down: clover/http-lb-v2 (connection refused)"),
        ("chain targets up", "FAIL",
         "not scraped: clover-server3; down: clover/http-lb-v2 (connection refused)"),
    ]  # fmt: skip


def test_a_target_not_scraped_yet_is_not_up() -> None:
    checks = stack_checks.evaluate_targets([target("prometheus", "unknown")], ["prometheus"], [], "c")
    assert checks[1].detail == "0 of 1 up; down: prometheus/127.0.0.1:9010 (not scraped yet)"
    assert not checks[1].passed


def test_prometheus_unreachable_is_one_failed_check_naming_the_url(tmp_path: Any) -> None:
    cfg = Config(prometheus_url="http://127.0.0.1:1", state_dir=tmp_path)
    fetch = fetcher({"http://127.0.0.1:1/-/ready": NoAnswer("cannot reach http://127.0.0.1:1/-/ready: refused")})
    assert stack_checks.monitoring(cfg, fetch) == [
        Check("monitoring", "prometheus ready", False,
              "cannot reach http://127.0.0.1:1/-/ready: refused (CLOVER_PROMETHEUS_URL)"),
    ]  # fmt: skip


def test_monitoring_reads_the_expected_jobs_from_the_rendered_configuration(tmp_path: Any) -> None:
    cfg = Config(prometheus_url="http://p", state_dir=tmp_path)
    conf = tmp_path / "prometheus" / "prometheus.yml"
    conf.parent.mkdir()
    conf.write_text("scrape_configs:\n  - job_name: prometheus\n  - job_name: extra\n")
    body = json.dumps({"status": "success", "data": {"activeTargets": healthy_targets()}})
    fetch = fetcher({
        "http://p/-/ready": Answer(200, "Prometheus Server is Ready.\n"),
        "http://p/api/v1/status/buildinfo": Answer(200, '{"data": {"version": "2.42.0"}}'),
        "http://p/api/v1/targets?state=active": Answer(200, body),
    })  # fmt: skip
    checks = stack_checks.monitoring(cfg, fetch)
    assert [(c.check, c.result) for c in checks] == [
        ("prometheus ready", "PASS"), ("scrape jobs", "FAIL"), ("targets up", "PASS"), ("chain targets up", "PASS"),
    ]  # fmt: skip
    assert checks[0].detail == "http://p/-/ready answered 200, version 2.42.0"
    assert checks[1].detail == f"no target for job extra (jobs of {conf})"


def configs(lb_v2: list[int], mirror: str = "http://snort-ids:80") -> dict[str, dict[str, Any]]:
    proxy = {"proxy": {"proxy_path": "http://http-lb:9180", "mirror_path": mirror}}
    lbs = {f"http-lb-{v}": {"lb": {"slb_list": [f"clover-server{i}:9180" for i in servers]}}
           for v, servers in (("v1", [1, 2, 3]), ("v2", lb_v2))}  # fmt: skip
    return {"proxy-access-control": proxy, **lbs}


def test_the_expected_services_follow_the_chains_routing() -> None:
    assert stack_checks.routed_services(configs([1, 2, 3]).__getitem__) == [
        "proxy-access-control", "http-lb", "snort-ids", "clover-server1", "clover-server2", "clover-server3",
    ]  # fmt: skip
    assert stack_checks.routed_services(configs([4, 5], mirror="").__getitem__) == [
        "proxy-access-control", "http-lb", "clover-server1", "clover-server2", "clover-server3",
        "clover-server4", "clover-server5",
    ]  # fmt: skip


def test_tracing_names_the_services_the_backend_does_not_list() -> None:
    cfg = Config(jaeger_url="http://j")
    listed = json.dumps({"data": ["proxy-access-control", "http-lb", "snort-ids", "clover-server1", "jaeger"]})
    fetch = fetcher({"http://j/api/services": Answer(200, listed)})
    checks = stack_checks.tracing(cfg, fetch, configs([4]).__getitem__)
    assert [(c.check, c.result, c.detail) for c in checks] == [
        ("jaeger answers", "PASS", "http://j/api/services lists 5 services"),
        ("chain services traced", "FAIL", "missing clover-server2, clover-server3, clover-server4 "
         "(no spans from them yet: send requests through the chain)"),
    ]  # fmt: skip


def test_tracing_with_the_routing_unknown_expects_every_service() -> None:
    def unanswered(pod: str) -> dict[str, Any]:
        raise NoAnswer(f"gRPC {pod} does not answer")

    every = list(dict.fromkeys(s.service for s in topology.POD_SPECS))
    fetch = fetcher({"http://j/api/services": Answer(200, json.dumps({"data": every}))})
    checks = stack_checks.tracing(Config(jaeger_url="http://j"), fetch, unanswered)
    assert checks[1].passed
    assert checks[1].detail.endswith(
        "; the chain's routing is unknown (gRPC proxy-access-control does not answer), so every service is expected"
    )


def test_tracing_with_the_backend_away_names_its_url() -> None:
    fetch = fetcher({"http://j/api/services": NoAnswer("cannot reach http://j/api/services: refused")})
    assert stack_checks.tracing(Config(jaeger_url="http://j"), fetch, configs([1]).__getitem__) == [
        Check("tracing", "jaeger answers", False, "cannot reach http://j/api/services: refused (CLOVER_JAEGER_URL)")
    ]


def test_a_degraded_controller_fails_its_check() -> None:
    fetch = fetcher({"http://c/health": Answer(503, '{"status": "degraded", "redis": "unreachable"}')})
    check = stack_checks.controller_check(Config(controller_url="http://c"), fetch)
    assert (check.result, check.detail) == ("FAIL", "http://c/health answered 503: status degraded, redis unreachable")


def test_a_pod_check_names_what_did_not_answer() -> None:
    cfg = Config(sdc_subnet="10.9.9.0/24", sdc_mode="loopback")

    def refused(host: str, port: int) -> None:
        raise NoAnswer(f"http {host}:{port}: Connection refused")

    assert stack_checks.pod_check(cfg, "clover-server2", lambda pod: {}, refused) == Check(
        "mesh", "pod clover-server2", False, "http 10.9.9.22:9180: Connection refused"
    )
    assert stack_checks.pod_check(cfg, "snort-ids", lambda pod: {}, lambda h, p: None).detail == (
        f"gRPC 10.9.9.30:50052 answers, http 10.9.9.30:{topology.ids_http_port()} accepts"
    )


CHECKS = [
    Check("monitoring", "prometheus ready", True, "ok"),
    Check("mesh", "pod clover-server3", False, "gRPC 10.0.0.23:50054 does not answer"),
    Check("mesh", "controller health", True, "status ok"),
]


def test_the_report_is_a_table_and_the_originals_closing_lines_and_exit_1_on_a_failure() -> None:
    text, code = stack_checks.report(CHECKS, ["monitoring", "mesh"], as_json=False)
    assert code == 1
    assert text.splitlines() == [
        "CHECK                         RESULT  DETAIL",
        "monitoring: prometheus ready  PASS    ok",
        "mesh: pod clover-server3      FAIL    gRPC 10.0.0.23:50054 does not answer",
        "mesh: controller health       PASS    status ok",
        "",
        "monitoring validation has passed",
        "mesh validation has failed",
    ]


def test_the_json_report_and_exit_0_when_everything_passed() -> None:
    passed = [CHECKS[0], CHECKS[2]]
    text, code = stack_checks.report(passed, ["monitoring", "mesh"], as_json=True)
    assert code == 0
    assert json.loads(text) == {
        "passed": True,
        "failed": 0,
        "sections": {
            "monitoring": {"passed": True, "message": "monitoring validation has passed"},
            "mesh": {"passed": True, "message": "mesh validation has passed"},
        },
        "checks": [
            {"section": "monitoring", "check": "prometheus ready", "passed": True, "detail": "ok", "result": "PASS"},
            {"section": "mesh", "check": "controller health", "passed": True, "detail": "status ok", "result": "PASS"},
        ],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_validate_monitoring_with_nothing_listening_exits_1_naming_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("CLOVER_PROMETHEUS_URL", f"http://127.0.0.1:{port}")
    result = CliRunner().invoke(cli, ["validate", "monitoring"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "CHECK                         RESULT  DETAIL",
        f"monitoring: prometheus ready  FAIL    cannot reach http://127.0.0.1:{port}/-/ready: "
        "connection refused or host unreachable (CLOVER_PROMETHEUS_URL)",
        "",
        "monitoring validation has failed",
    ]
    as_json = CliRunner().invoke(cli, ["-o", "json", "validate", "monitoring"])
    assert as_json.exit_code == 1
    assert json.loads(as_json.output)["sections"] == {
        "monitoring": {"passed": False, "message": "monitoring validation has failed"}
    }


def test_validate_refuses_an_unknown_section() -> None:
    result = CliRunner().invoke(cli, ["validate", "storage"])
    assert result.exit_code == 2
    assert "'storage' is not one of 'monitoring', 'tracing', 'mesh', 'logging', 'all'" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["create", "provider", "kubernetes", "-f", "kube.yaml"],
        ["create", "provider", "docker-registry", "-f", "registry.yaml"],
        ["delete", "provider", "kubernetes", "-n", "my-kube"],
        ["get", "provider", "docker-registry"],
    ],
)
def test_the_originals_provider_commands_say_why_spinnaker_is_not_here(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {args[0]} provider {args[2]}: Spinnaker is not part of this Clover: ")
    assert "no Halyard or Spinnaker artifacts are obtainable" in result.output


def test_provider_json_error() -> None:
    result = CliRunner().invoke(cli, ["-o", "json", "get", "provider", "kubernetes"])
    assert result.exit_code == 1
    body = json.loads(result.output)
    assert body["command"] == "get provider kubernetes"
    assert body["error"].startswith("Spinnaker is not part of this Clover")


def test_with_zipkin_as_the_trace_backend_its_services_list_is_read() -> None:
    cfg = Config(zipkin_url="http://z", trace_backend="zipkin")
    fetch = fetcher({"http://z/api/v2/services": Answer(200, json.dumps(["proxy-access-control", "http-lb"]))})
    checks = stack_checks.tracing(cfg, fetch, {"proxy-access-control": {"proxy": {"proxy_path": "http://http-lb:9180",
                                                                                   "mirror_path": ""}},
                                               "http-lb-v1": {"lb": {"slb_list": []}},
                                               "http-lb-v2": {"lb": {"slb_list": []}}}.__getitem__)  # fmt: skip
    assert [(c.check, c.result, c.detail) for c in checks] == [
        ("zipkin answers", "PASS", "http://z/api/v2/services lists 2 services"),
        ("chain services traced", "PASS", "all 2 services of the chain: proxy-access-control, http-lb"),
    ]


def _obj(name: str, **fields: Any) -> Any:
    return NS(metadata=NS(name=name), **fields)


class _Listing:
    """What the Kubernetes client's list calls return, for the objects the test made."""

    def __init__(self, **items: list[Any]):
        self.items = items

    def __getattr__(self, call: str) -> Any:
        kind = call.removeprefix("list_namespaced_")
        return lambda namespace, _request_timeout: NS(items=self.items.get(kind, []))


def test_cluster_workloads_ready_and_not_ready() -> None:
    apps = _Listing(
        deployment=[_obj("clover-controller", spec=NS(replicas=1), status=NS(ready_replicas=1)),
                    _obj("clover-collector", spec=NS(replicas=2), status=NS(ready_replicas=None))],
        stateful_set=[_obj("redis", spec=NS(replicas=1), status=NS(ready_replicas=1))],
        daemon_set=[_obj("clovisor", status=NS(desired_number_scheduled=1, number_ready=0))],
    )  # fmt: skip
    core = _Listing(pod=[
        _obj("redis-0", status=NS(phase="Running", container_statuses=[NS(ready=True)])),
        _obj("clovisor-x", status=NS(phase="Pending", container_statuses=None)),
        _obj("job-done", status=NS(phase="Succeeded", container_statuses=[NS(ready=False)])),
    ])  # fmt: skip
    checks = stack_checks.workload_checks(apps, core, "clover-system")
    assert [(c.check, c.result, c.detail) for c in checks] == [
        ("deployment clover-controller", "PASS", "1 of 1 ready in clover-system"),
        ("deployment clover-collector", "FAIL", "0 of 2 ready in clover-system"),
        ("statefulset redis", "PASS", "1 of 1 ready in clover-system"),
        ("daemonset clovisor", "FAIL", "0 of 1 ready in clover-system"),
        ("pod redis-0", "PASS", "Running, 1/1 containers ready"),
        ("pod clovisor-x", "FAIL", "Pending, 0/0 containers ready"),
    ]
    assert stack_checks.workload_checks(_Listing(), _Listing(), "empty") == [
        Check("mesh", "namespace empty", False, "no workload in namespace empty")
    ]
