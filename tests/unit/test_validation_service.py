"""The gRPC service without running JMeter: plans in and out, refusals, nothing written on error.

The service runs in-process on an ephemeral loopback port; JMeter itself is exercised by
tests/integration/test_validation_jmeter.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
import yaml
from click.testing import CliRunner

from clover.config import Config
from cloverctl.main import cli
from protos import jmeter_pb2
from validation import client
from validation.plan import PlanError, parse_plan
from validation.protocol import plan_from_proto, plan_to_proto
from validation.runner import prune_runs
from validation.server import ValidationService, serve

PLAN = {
    "load_spec": {"num_threads": 2, "loops": 3, "ramp_time": 1, "duration": 0},
    "url_list": [
        {"name": "home", "url": "http://proxy-access-control.default:9180/?a=1", "user-agent": "chrome"},
        {
            "name": "order",
            "url": "https://shop:8443/orders",
            "method": "POST",
            "headers": {"Content-Type": "application/json"},
            "body": '{"id": 1}',
        },
    ],
}


def test_a_plan_survives_the_proto_round_trip() -> None:
    plan = parse_plan(PLAN, "smoke")
    msg = plan_to_proto(plan)
    assert list(msg.url_list) == ["http://proxy-access-control.default:9180/?a=1", "https://shop:8443/orders"]
    assert (list(msg.url_names), list(msg.url_protocols), list(msg.url_methods), list(msg.url_agents)) == (
        ["home", "order"],
        ["http", "https"],
        ["GET", "POST"],
        ["chrome", ""],
    )
    assert (msg.num_threads, msg.loops, msg.ramp_time, msg.duration, msg.test_plan) == (2, 3, 1, 0, "smoke.jmx")
    assert plan_from_proto(msg) == plan


def test_a_proto_with_misaligned_lists_is_refused_naming_the_field() -> None:
    msg = jmeter_pb2.ConfigJmeter(url_list=["h1", "h2"], url_names=["a"], url_methods=["GET"], num_threads=1, loops=1)
    with pytest.raises(PlanError) as exc:
        plan_from_proto(msg)
    assert exc.value.problems == [
        ("url_names", "has 1 entries for 2 urls: every url needs a name"),
        ("url_methods", "has 1 entries for 2 urls (give one per url, or none)"),
    ]


def test_an_empty_proto_is_refused_like_an_empty_yaml() -> None:
    with pytest.raises(PlanError) as exc:
        plan_from_proto(jmeter_pb2.ConfigJmeter())
    assert exc.value.problems == [
        ("load_spec.num_threads", "must be at least 1, not 0"),
        ("load_spec.duration", "loops 0 runs forever: give a duration (seconds) to stop it"),
        ("url_list", "is empty: give at least one request"),
    ]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, ValidationService]]:
    cfg = replace(Config.from_env({}), state_dir=tmp_path / "state", jmeter_slaves=("10.0.0.1:1099",))
    svc = ValidationService(cfg, tmp_path / "work", resolve=lambda host: {"shop": "127.0.0.9"}.get(host, host))
    server, port = serve(svc, "127.0.0.1:0")
    yield f"127.0.0.1:{port}", svc
    server.stop(0)


def test_gen_test_writes_the_jmx_and_the_checked_yaml(service: tuple[str, ValidationService]) -> None:
    target, svc = service
    assert client.gen_test(target, parse_plan(PLAN)) == "Generated test plan"
    assert sorted(p.name for p in svc.plans.iterdir()) == ["test.jmx", "test.yaml"]
    assert '<stringProp name="HTTPSampler.domain">127.0.0.9</stringProp>' in (svc.plans / "test.jmx").read_text()
    assert yaml.safe_load((svc.plans / "test.yaml").read_text())["url_list"][1]["url"] == "https://shop:8443/orders"


def test_a_malformed_plan_is_refused_and_the_accepted_one_is_kept(service: tuple[str, ValidationService]) -> None:
    target, svc = service
    client.gen_test(target, parse_plan(PLAN))
    before = (svc.plans / "test.jmx").read_text()
    bad = plan_to_proto(parse_plan(PLAN))
    bad.url_list[1] = "ftp://shop/orders"
    bad.num_threads = 0
    with grpc.insecure_channel(target) as channel:
        stub = client.jmeter_pb2_grpc.ControllerStub(channel)
        with pytest.raises(grpc.RpcError) as exc:
            stub.GenTest(bad, timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details() == (
        "Failed to generate test plan: load_spec.num_threads: must be at least 1, not 0; "
        "url_list[1].url: 'ftp://shop/orders': the scheme must be http or https, not 'ftp'"
    )
    assert (svc.plans / "test.jmx").read_text() == before
    assert sorted(p.name for p in svc.plans.iterdir()) == ["test.jmx", "test.yaml"]


def test_nothing_to_start_or_retrieve_before_a_plan_and_a_run(service: tuple[str, ValidationService]) -> None:
    target, _ = service
    assert client.get_status(target) == client.RunStatus(state="idle")
    with pytest.raises(client.ValidationError) as exc:
        client.start_test(target)
    assert (exc.value.code, str(exc.value)) == (
        grpc.StatusCode.NOT_FOUND,
        "Failed to start test: there is no test plan test.jmx; create one first (cloverctl create testplan -f <yaml>)",
    )
    with pytest.raises(client.ValidationError) as exc:
        client.get_results(target, "log")
    assert (exc.value.code, str(exc.value)) == (
        grpc.StatusCode.NOT_FOUND,
        "Failed to retrieve results: no test has been run yet",
    )
    with pytest.raises(client.ValidationError) as exc:
        client.stop_test(target)
    assert str(exc.value) == "Failed to stop test: no test is running"


@pytest.mark.parametrize(
    ("num_slaves", "slave_ips", "code", "message"),
    [
        (-1, [], grpc.StatusCode.INVALID_ARGUMENT, "Failed to start test: num_slaves must be 0 or more, not -1"),
        (
            3,
            ["10.0.0.5", "10.0.0.6:1099"],
            grpc.StatusCode.INVALID_ARGUMENT,
            "Failed to start test: num_slaves is 3 but slave_ips names only 2 servers",
        ),
        (
            1,
            ["10.0.0.5:http"],
            grpc.StatusCode.INVALID_ARGUMENT,
            "Failed to start test: slave_ips: '10.0.0.5:http' is not host[:port]",
        ),
        (
            2,
            [],
            grpc.StatusCode.FAILED_PRECONDITION,
            "Failed to start test: 2 slaves requested but only 1 found (CLOVER_JMETER_SLAVES=10.0.0.1:1099)",
        ),
    ],
)
def test_impossible_slave_requests_are_refused(
    service: tuple[str, ValidationService], num_slaves: int, slave_ips: list[str], code: grpc.StatusCode, message: str
) -> None:
    target, _ = service
    client.gen_test(target, parse_plan(PLAN))
    with pytest.raises(client.ValidationError) as exc:
        client.start_test(target, num_slaves=num_slaves, slave_ips=slave_ips)
    assert (exc.value.code, str(exc.value)) == (code, message)


def test_unknown_result_kinds_and_formats_are_refused(service: tuple[str, ValidationService]) -> None:
    target, svc = service
    (svc.runs / "r1").mkdir()
    (svc.runs / "last").write_text("r1")
    for r_file, r_format, message in [
        ("stats", "", "Failed to retrieve results: r_file 'stats' is not one of log, detail, results, summary"),
        ("summary", "xml", "Failed to retrieve results: r_format 'xml' is not text, csv or json"),
        ("detail", "text", "Failed to retrieve results: r_format 'text' is not csv or json"),
    ]:
        with pytest.raises(client.ValidationError) as exc:
            client.get_results(target, r_file, r_format)
        assert (exc.value.code, str(exc.value)) == (grpc.StatusCode.INVALID_ARGUMENT, message)


def test_a_bad_plan_is_refused_by_the_cli_before_anything_is_sent(tmp_path: Path) -> None:
    bad = tmp_path / "plan.yaml"
    bad.write_text("load_spec:\n  num_threads: 0\nurl_list:\n  - name: a\n    url: h\n    user_agent: x\n")
    # Nothing listens on the configured port: a refusal proves the CLI never dialled it.
    result = CliRunner().invoke(
        cli, ["create", "testplan", "-f", str(bad)], env={"CLOVER_VALIDATION_GRPC": "127.0.0.1:9"}
    )
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {bad} was refused (nothing was sent):\n"
        "  load_spec.num_threads: must be at least 1, not 0\n"
        "  url_list[0].user_agent: unknown field (did you mean user-agent? known: name, url, method, user-agent,"
        " headers, body, protocol)\n"
    )


def test_the_cli_says_when_the_service_is_unreachable(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["get", "testresult"], env={"CLOVER_CONTROLLER_URL": "http://127.0.0.1:9"})
    assert result.exit_code == 3
    assert result.output.startswith("Error: cannot reach the clover-controller at http://127.0.0.1:9 ")


def test_a_verb_alone_is_an_incomplete_command() -> None:
    result = CliRunner().invoke(cli, ["start"])
    assert result.exit_code == 1
    assert result.output.startswith("Incomplete command\nUsage: cli start [OPTIONS] [COMMAND] [ARGS]...")


def test_old_runs_are_pruned_newest_kept(tmp_path: Path) -> None:
    ids = ["20261126-100000-aaaa", "20261126-110000-bbbb", "20261126-120000-cccc", "20261126-130000-dddd"]
    for run_id in ids:
        (tmp_path / run_id).mkdir()
    (tmp_path / "last").write_text(ids[-1])
    (tmp_path / "not-a-run").mkdir()
    assert prune_runs(tmp_path, 2) == ids[:2]
    assert sorted(p.name for p in tmp_path.iterdir()) == [*ids[2:], "last", "not-a-run"]
