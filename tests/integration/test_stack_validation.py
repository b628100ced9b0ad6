"""``cloverctl validate`` against the real local stack: Redis, Prometheus, Jaeger, the sample
chain and the controller. Healthy, with traffic the test sends through the chain, every check
passes; with Prometheus stopped the monitoring check fails, with a chain pod stopped the mesh
check fails, each naming what; what a test stops it starts again."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from click.testing import CliRunner, Result

import tests.integration.controller_parts as controller_parts  # the chain's settings, before the configuration is read
from clover.config import Config
from cloverctl.main import cli
from sdc import grpc_client, topology
from stack.catalogue import local_stack
from stack.launcher import Launcher
from tests.waiting import wait_until

PARTS = ["redis", "prometheus", "jaeger", "sdc", "controller"]
PROXY = "proxy-access-control"
SERVER = "clover-server3"
WAIT = "90"  # a deadline for new scrape targets and spans to show up, not a timing assertion


def validate(*args: str) -> Result:
    return CliRunner().invoke(cli, ["validate", *args], catch_exceptions=False)


def send_through_chain(cfg: Config, n: int) -> set[str]:
    """``n`` requests through the proxy; the servers that answered."""
    served = set()
    for _ in range(n):
        answer = requests.get(f"http://{topology.pod_ip(cfg, PROXY)}:{topology.HTTP_PORT}/", timeout=10)
        assert answer.status_code == 200, answer.text
        served.add(answer.headers["X-Served-By"])
    return served


def lb_body(servers: list[int]) -> dict[str, object]:
    return {"lb_name": "http-lb-v2.default", "server_port": "9180", "server_name": "http-lb", "lb_group": "cloverlb",
            "lb_path": "/", "lb_list": [{"url": f"clover-server{i}:9180"} for i in servers]}  # fmt: skip


@pytest.fixture(scope="module")
def healthy(cfg: Config) -> Iterator[Launcher]:
    """The parts running, and traffic through the chain so its services have spans in Jaeger."""
    with controller_parts.running(local_stack(cfg), PARTS) as launcher:
        assert send_through_chain(cfg, 6) == {"clover-server1", "clover-server2", "clover-server3"}
        yield launcher


def rows(result: Result) -> dict[str, tuple[str, str]]:
    """The table's rows: check -> (result, detail)."""
    out = {}
    for line in result.output.splitlines()[1:]:
        if not line:
            break
        check, result_, detail = [p for p in line.split("  ") if p][:3]
        out[check.strip()] = (result_.strip(), detail.strip())
    return out


def test_validate_all_passes_on_a_healthy_stack(healthy: Launcher, cfg: Config) -> None:
    result = validate("all", "--wait", WAIT)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-3:] == [
        "monitoring validation has passed",
        "tracing validation has passed",
        "mesh validation has passed",
    ]
    table = rows(result)
    assert {check for check, (outcome, _) in table.items() if outcome != "PASS"} == set()
    assert sorted(table) == sorted(
        ["monitoring: prometheus ready", "monitoring: scrape jobs", "monitoring: targets up",
         "monitoring: chain targets up", "tracing: jaeger answers", "tracing: chain services traced",
         "mesh: controller health"] + [f"mesh: pod {p}" for p in topology.POD_NAMES]
    )  # fmt: skip
    conf = cfg.state_dir / "prometheus" / "prometheus.yml"
    assert table["monitoring: scrape jobs"][1] == f"prometheus, clover (from {conf})"
    assert table["monitoring: chain targets up"][1] == f"all {len(topology.POD_NAMES)} pods of the chain scraped and up"
    assert table["tracing: chain services traced"][1] == (
        "all 6 services of the chain: proxy-access-control, http-lb, snort-ids, "
        "clover-server1, clover-server2, clover-server3"
    )
    ip = topology.pod_ip(cfg, SERVER)
    assert table[f"mesh: pod {SERVER}"][1] == f"gRPC {ip}:50054 answers, http {ip}:9180 accepts"
    assert table["mesh: controller health"][1] == f"{cfg.controller_url}/health answered 200: status ok, redis ok"

    as_json = json.loads(CliRunner().invoke(cli, ["-o", "json", "validate", "all"]).output)
    assert (as_json["passed"], as_json["failed"], len(as_json["checks"])) == (True, 0, len(table))


def test_tracing_expects_the_servers_the_load_balancers_route_to(healthy: Launcher, cfg: Config) -> None:
    assert grpc_client.modify_lb(cfg, lb_body([4, 5])) == "Modified nginx config"
    try:
        assert send_through_chain(cfg, 8) == {"clover-server1", "clover-server2", "clover-server3",
                                              "clover-server4", "clover-server5"}  # fmt: skip
        result = validate("tracing", "--wait", WAIT)
        assert result.exit_code == 0, result.output
        assert rows(result)["tracing: chain services traced"] == ("PASS", (
            "all 8 services of the chain: proxy-access-control, http-lb, snort-ids, clover-server1, "
            "clover-server2, clover-server3, clover-server4, clover-server5"
        ))  # fmt: skip
    finally:
        assert grpc_client.modify_lb(cfg, lb_body([1, 2, 3])) == "Modified nginx config"


def test_with_prometheus_stopped_monitoring_fails_and_names_it(healthy: Launcher, cfg: Config) -> None:
    healthy.down(["prometheus"])
    try:
        result = validate("monitoring")
        assert result.exit_code == 1
        assert result.output.splitlines() == [
            "CHECK                         RESULT  DETAIL",
            f"monitoring: prometheus ready  FAIL    cannot reach {cfg.prometheus_url}/-/ready: "
            "connection refused or host unreachable (CLOVER_PROMETHEUS_URL)",
            "",
            "monitoring validation has failed",
        ]
        everything = validate("all")
        assert everything.exit_code == 1
        assert everything.output.splitlines()[-3:] == [
            "monitoring validation has failed",
            "tracing validation has passed",
            "mesh validation has passed",
        ]
    finally:
        healthy.up(["prometheus"])
    assert validate("monitoring", "--wait", WAIT).exit_code == 0


def test_with_a_chain_pod_stopped_mesh_fails_and_names_it(healthy: Launcher, cfg: Config) -> None:
    healthy.down([SERVER])
    try:
        result = validate("mesh")
        assert result.exit_code == 1
        table = rows(result)
        assert {check for check, (outcome, _) in table.items() if outcome == "FAIL"} == {f"mesh: pod {SERVER}"}
        assert table[f"mesh: pod {SERVER}"][1].startswith(
            f"gRPC {topology.pod_ip(cfg, SERVER)}:50054 does not answer: UNAVAILABLE"
        )
        assert len(table) == len(topology.POD_NAMES) + 1
        assert result.output.splitlines()[-1] == "mesh validation has failed"

        # Its scrape target goes with it, once Prometheus re-reads its targets (every 5 s).
        def unscraped() -> Result | None:
            monitoring = validate("monitoring")
            unscraped_row = ("FAIL", f"not scraped: {SERVER}")
            return monitoring if rows(monitoring).get("monitoring: chain targets up") == unscraped_row else None

        monitoring = wait_until(unscraped, 60, 1, f"Prometheus to drop {SERVER}'s target")
        assert monitoring.exit_code == 1
        assert monitoring.output.splitlines()[-1] == "monitoring validation has failed"
    finally:
        healthy.up([SERVER])
    assert validate("all", "--wait", WAIT).exit_code == 0
