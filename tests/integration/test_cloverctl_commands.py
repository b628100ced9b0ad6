"""Every cloverctl command that goes through the controller, against the controller running as
a part of the test stack and the real services behind it: the output people read, the JSON
scripts read (-o json) and the exit code CI relies on."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from click.testing import CliRunner, Result

from clover import keys
from clover.config import API_TOKEN_FILE, Config, secret_file
from cloverctl.main import cli
from stack.launcher import Launcher
from tests.integration.controller_parts import CHAIN, flush_visibility, running

YAML_DIR = Path(__file__).resolve().parents[2] / "cloverctl" / "yaml"


@pytest.fixture(scope="module")
def parts(stack: Launcher) -> Iterator[Launcher]:
    with running(stack, CHAIN) as launcher:
        yield launcher


@pytest.fixture
def store(parts: Launcher, cfg: Config) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(cfg.redis_url, decode_responses=True)
    flush_visibility(client)
    yield client
    flush_visibility(client)
    client.close()


def cloverctl(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def run_ok(*args: str) -> str:
    result = cloverctl(*args)
    assert result.exit_code == 0, f"cloverctl {' '.join(args)} exited {result.exit_code}: {result.output}"
    return result.output


def write(tmp_path: Path, name: str, data: Any) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def seed(store: redis.Redis) -> None:
    store.sadd(keys.VISIBILITY_SERVICES, "proxy_access_control", "clover_server1")
    store.mset({keys.TRACE_COUNT: "3", keys.SPAN_COUNT: "12", keys.METRIC_COUNT: "40"})
    store.hset("proxy-access-control", mapping={
        "min_rt": "1.00", "avg_rt": "5.00", "max_rt": "90.00", "p50_rt": "4.00", "p90_rt": "9.00", "p99_rt": "60.00",
        "p999_rt": "90.00", "request_count": "200", "error_rate": "0.0300", "request_rate": "3.33",
        "source": "clovisor"})  # fmt: skip
    store.hset("proxy-access-control:window", mapping={"p99_rt": "20.00", "error_rate": "0.0000"})
    store.hset("clover-server1", mapping={"p99_rt": "8.00", "error_rate": "0.0000", "request_count": "60"})
    store.zadd(keys.SPAN_URLS_Z, {"/": 9, "/a": 3})
    store.sadd(keys.SPAN_URLS, "/", "/a")


def get_status_running(parts: Launcher) -> bool:
    from collector.client import collector_status

    return bool(collector_status(parts.cfg.collector_grpc).running)


def test_visibility_init_start_stop_and_clear(parts: Launcher, cfg: Config, tmp_path: Path) -> None:
    pid = parts.process("collector").pid  # type: ignore[union-attr]
    assert run_ok("init", "visibility") == "Added visibility schemas in cassandra\n"
    start = {"sample_interval": "2", "t_host": "127.0.0.1", "t_port": str(cfg.jaeger_port), "m_host": "127.0.0.1",
             "m_port": str(cfg.prometheus_port)}  # fmt: skip
    try:
        assert run_ok("start", "visibility", "-f", write(tmp_path, "start.yaml", start)) == (
            f"Started collector on pid: {pid}\n"
        )
        assert run_ok("start", "visibility") == f"Collector already running on pid: {pid}\n"
        assert run_ok("stop", "visibility") == f"Stopped collector on pid: {pid}\n"
        stopped = cloverctl("stop", "visibility")
        assert (stopped.exit_code, stopped.output) == (
            1,
            "Error: Failed to stop collector: the collector is not running\n",
        )
        # Without -f every field takes the controller's defaults (the original sent a body it then refused).
        assert run_ok("start", "visibility", "-o", "json") == json.dumps(
            {"message": f"Started collector on pid: {pid}"}, indent=2) + "\n"  # fmt: skip
    finally:
        cloverctl("stop", "visibility")
    bad = cloverctl("start", "visibility", "-f", write(tmp_path, "bad.yaml", {"t_port": "http"}))
    assert (bad.exit_code, bad.output) == (
        1,
        "Error: Invalid value in json/yaml: t_port: must be a port number (1-65535), not 'http'\n",
    )
    assert get_status_running(parts) is False
    assert run_ok("clear", "visibility") == "Truncated visibility tables\n"


def test_set_and_get_visibility(store: redis.Redis) -> None:
    assert run_ok("set", "visibility", "-f", "set_visibility.yaml") == "Updated visibility config\n"
    assert run_ok("get", "visibility", "-c", "all") == (
        "Tracked services: clover_server1, clover_server2, clover_server3, proxy_access_control\n"
        "Metric prefixes: envoy_cluster_inbound_9180__, envoy_cluster_outbound_9180__\n"
        "Metric suffixes: _default_svc_cluster_local_upstream_cx_active, _default_svc_cluster_local_upstream_rq_2xx\n"
        "Custom metrics: envoy_tracing_zipkin_spans_sent\n"
    )
    tracked = ["clover_server1", "clover_server2", "clover_server3", "proxy_access_control"]
    assert json.loads(run_ok("get", "visibility", "-c", "services", "-o", "json")) == {"visibility_services": tracked}
    refused = cloverctl("set", "visibility", "-f", "lbv2.yaml")
    assert refused.exit_code == 1
    assert refused.output.startswith("Error: Invalid value in json/yaml: lb_group: unknown field (expected one of ")
    assert store.scard(keys.VISIBILITY_SERVICES) == 4
    flush_visibility(store)
    seed(store)
    text = run_ok("get", "visibility", "-s", "system")
    assert text == "System counts:\n         COUNT\ntraces   3\nspans    12\nmetrics  40\n"
    tracing = run_ok("get", "visibility", "-s", "tracing").splitlines()
    assert tracing[:4] == [
        "Requests and response times in ms (whole retention; each request once, SOURCE: where measured):",
        "SERVICE               REQUESTS  MIN   AVG   MAX    P50   P90   P99    P99.9  ERROR RATE  REQ/S  SOURCE",
        "clover-server1        60        -     -     -      -     -     8.00   -      0.00%       -      -",
        "proxy-access-control  200       1.00  5.00  90.00  4.00  9.00  60.00  90.00  3.00%       3.33   clovisor",
    ]
    assert tracing[tracing.index("Spans per URL (highest 2):") + 1 :][:3] == ["COUNT  VALUE", "9      /", "3      /a"]
    as_json = json.loads(run_ok("-o", "json", "get", "visibility", "-s", "tracing", "--limit", "1"))
    assert as_json["request_url_count"] == [["/", 9.0]]
    assert as_json["response_times"][1]["p99"] == "60.00"


def test_cloverctl_sends_the_local_stacks_token_without_being_told(store: redis.Redis, cfg: Config) -> None:
    """The test stack's controller needs the token `local up` made; cloverctl finds it by itself."""
    result = cloverctl("-v", "set", "visibility", "-f", "set_visibility.yaml", env={"CLOVER_API_TOKEN": None})
    assert result.exit_code == 0, result.output
    assert result.output.endswith("Updated visibility config\n")
    assert f"API token: from {secret_file(cfg.state_dir, API_TOKEN_FILE)}\n" in result.output
    assert cfg.api_token and cfg.api_token not in result.output
    wrong = cloverctl("--token", "wrong", "set", "visibility", "-f", "set_visibility.yaml")
    assert (wrong.exit_code, wrong.output) == (1, "Error: the API token is wrong\n")


def test_check_visibility_passes_fails_and_explains(store: redis.Redis) -> None:
    seed(store)
    limits = ["--max-p99", "proxy-access-control=70ms", "--max-p99", "clover_server1=10", "--max-error-rate", "5%"]
    passed = cloverctl("check", "visibility", *limits)
    assert (passed.exit_code, passed.output) == (0, (
        "SERVICE               CHECK       LIMIT       ACTUAL    RESULT\n"
        "clover-server1        p99         ≤ 10.00 ms  8.00 ms   ok\n"
        "clover-server1        error rate  ≤ 5.00%     0.00%     ok\n"
        "proxy-access-control  p99         ≤ 70.00 ms  60.00 ms  ok\n"
        "proxy-access-control  error rate  ≤ 5.00%     3.00%     ok\n"
        "\nall 4 checks passed (the whole retention)\n"))  # fmt: skip
    failed = cloverctl("check", "visibility", "--max-p99", "proxy-access-control=50ms", "--max-error-rate", "1%",
                       "--min-requests", "clover-server2=1")  # fmt: skip
    assert (failed.exit_code, failed.output) == (1, (
        "SERVICE               CHECK       LIMIT       ACTUAL    RESULT\n"
        "clover-server1        error rate  ≤ 1.00%     0.00%     ok\n"
        "clover-server2        requests    ≥ 1         NA        NO DATA\n"
        "proxy-access-control  p99         ≤ 50.00 ms  60.00 ms  FAIL\n"
        "proxy-access-control  error rate  ≤ 1.00%     3.00%     FAIL\n"
        "\n3 of 4 checks failed (the whole retention)\n"))  # fmt: skip
    window = cloverctl("check", "visibility", "--window", "--max-p99", "proxy-access-control=50ms", "-o", "json")
    assert window.exit_code == 0
    assert json.loads(window.output) == {"passed": True, "failed": 0, "checks": [
        {"service": "proxy-access-control", "check": "p99", "limit": "≤ 50.00 ms", "actual": "20.00 ms",
         "result": "ok"}]}  # fmt: skip


def test_sample_chain_commands(parts: Launcher, tmp_path: Path) -> None:
    restore = {**yaml.safe_load((YAML_DIR / "lbv2.yaml").read_text()),
               "lb_list": [{"url": f"clover-server{i}:9180"} for i in (1, 2, 3)]}  # fmt: skip
    try:
        assert run_ok("set", "lb", "-f", "lbv2.yaml") == "Modified nginx config\n"
        assert run_ok("get", "lb", "http-lb-v2").splitlines()[5:8] == ["  slb_list:", "  - clover-server4:9180",
                                                                        "  - clover-server5:9180"]  # fmt: skip
        assert json.loads(run_ok("-o", "json", "set", "lb", "-f", "lbv2.yaml")) == {"message": "Modified nginx config"}
    finally:
        assert run_ok("set", "lb", "-f", write(tmp_path, "lb.yaml", restore)) == "Modified nginx config\n"
    server = {"server_name": "clover-server3", "server_port": "9180", "site_root": "/var/www/html"}
    assert run_ok("set", "server", "-f", write(tmp_path, "server.yaml", server)) == "Modified nginx config\n"
    moved = {**server, "files": [{"src_file": "/var/www/html/upload/0000000077", "dest_file": "/var/www/html/b"}]}
    refused = cloverctl("set", "server", "-f", write(tmp_path, "moved.yaml", moved))
    assert (refused.exit_code, refused.output) == (1, (
        "Error: Failed to modify nginx config: files[0].src_file '/var/www/html/upload/0000000077' does not exist "
        "on clover-server3\n"))  # fmt: skip
    assert run_ok("create", "idsrules", "-f", "idsrule_scan.yaml") == "Added to local rules\n"
    assert re.fullmatch(r"Stopped Snort on pid: \d+, Cleared Snort logs\n", run_ok("stop", "ids"))
    assert re.fullmatch(r"Started Snort on pid: \d+\n", run_ok("start", "ids"))
    assert run_ok("get", "ids").startswith("running: true\n")
    assert re.fullmatch(
        r" 10000003 local\.rules +loaded +alert tcp any any -> \$HOME_NET any "
        r"\(msg:\"MALWARE-CNC User-Agent ASafaWeb Scan\";.*\n",
        run_ok("get", "idsrules", "--sid", "10000003"),
    )
    assert run_ok("delete", "idsrules", "--sid", "10000003") == "Deleted 1 rule(s) from local rules\n"
    assert run_ok("-o", "json", "get", "idsrules", "--sid", "10000003") == "[]\n"
    gone = cloverctl("delete", "idsrules", "--sid", "10000003")
    assert (gone.exit_code, gone.output) == (
        1,
        "Error: Failed to delete local rules: sids 10000003 are not in local.rules\n",
    )
    assert run_ok("create", "idsrules", "-f", "idsrule_scan.yaml") == "Added to local rules\n"
    proxy = json.loads(run_ok("-o", "json", "get", "proxy"))["proxy"]
    try:
        assert (
            run_ok("set", "proxy", "-f", write(tmp_path, "proxy.yaml", {"block_seconds": 7}))
            == "Modified nginx config\n"
        )
        assert json.loads(run_ok("-o", "json", "get", "proxy"))["proxy"]["block_seconds"] == 7
    finally:
        run_ok("set", "proxy", "-f", write(tmp_path, "proxy.yaml", {"block_seconds": proxy["block_seconds"]}))
    bad = cloverctl("create", "idsrules", "-f", "lbv2.yaml")
    assert bad.exit_code == 1
    assert bad.output.startswith("Error: Invalid value in json/yaml: the rule spec: unknown field(s) lb_group, ")
    missing = cloverctl("set", "lb", "-f", str(tmp_path / "nothing.yaml"))
    assert (missing.exit_code, missing.output) == (
        2, f"Error: {tmp_path / 'nothing.yaml'}: no such file (nor in {YAML_DIR})\n")  # fmt: skip


def test_validation_commands(parts: Launcher, cfg: Config, tmp_path: Path) -> None:
    probe = {"name": "probe", "url": cfg.controller_url + "/test", "method": "GET", "user-agent": "cloverctl-it"}
    plan = write(tmp_path, "plan.yaml", {"load_spec": {"num_threads": 1, "loops": 3}, "url_list": [probe]})
    assert run_ok("create", "testplan", "-f", plan) == "Generated test plan\n"
    bad = write(tmp_path, "bad.yaml", {"load_spec": {"num_threads": 1, "loops": 0}, "url_list": [probe]})
    refused = cloverctl("create", "testplan", "-f", bad)
    assert (refused.exit_code, refused.output) == (1, (
        f"Error: {bad} was refused (nothing was sent):\n"
        "  load_spec.duration: loops 0 runs forever: give a duration (seconds) to stop it\n"))  # fmt: skip
    waited = run_ok("start", "testplan", "--wait", "--timeout", "180").splitlines()
    assert re.fullmatch(r"Started jmeter on pid: \d+", waited[0])
    header = next(i for i, line in enumerate(waited) if line.startswith("label"))
    assert all(line.startswith("  ") for line in waited[1:header])  # progress lines
    assert waited[header - 1].startswith("  finished: 3 samples, 0 errors, ")
    waited = waited[header - 2 :]
    assert waited[2].split() == ["label", "samples", "errors", "error", "%", "req/s", "mean", "min", "p50", "p90",
                                 "p99", "p99.9", "max", "(ms)"]  # fmt: skip
    assert [line.split()[:3] for line in waited[3:]] == [["probe", "3", "0"], ["TOTAL", "3", "0"]]
    log = run_ok("get", "testresult")
    assert log.startswith("Retrieved all results\n") and "summary =      3 in" in log
    assert run_ok("get", "testresult", "log") == log
    detail = run_ok("get", "testresult", "detail").splitlines()
    assert detail[0] == "Retrieved all results" and [row.split(",")[2] for row in detail[2:]] == ["probe"] * 3
    status = run_ok("get", "teststatus")
    assert re.fullmatch(r"run \S+ \(test\.jmx, pid \d+\) finished: 3 samples, 0 errors, \d+s\n", status)
    assert json.loads(run_ok("get", "teststatus", "-o", "json"))["samples"] == 3
    stopped = cloverctl("stop", "testplan")
    assert (stopped.exit_code, stopped.output) == (1, "Error: Failed to stop test: no test is running\n")


def test_the_controller_address_from_the_flag_and_from_cloverctl_yaml(cfg: Config, tmp_path: Path) -> None:
    (tmp_path / ".cloverctl.yaml").write_text(f"ControllerIP: 127.0.0.1:{cfg.controller_port}\n")
    env: dict[str, str | None] = {"HOME": str(tmp_path), "CLOVER_CONTROLLER_URL": None}
    result = cloverctl("-v", "init", "visibility", env=env)
    assert result.exit_code == 0
    assert result.stdout == "Added visibility schemas in cassandra\n"
    assert result.stderr == (
        f"clover-controller address: http://127.0.0.1:{cfg.controller_port} (from {tmp_path / '.cloverctl.yaml'} "
        f"ControllerIP)\nAPI token: from {secret_file(cfg.state_dir, API_TOKEN_FILE)}\n"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    unreachable = cloverctl("--controller", f"127.0.0.1:{closed}", "get", "visibility", env=env)
    assert unreachable.exit_code == 3
    assert unreachable.output.startswith(f"Error: cannot reach the clover-controller at http://127.0.0.1:{closed} ")
