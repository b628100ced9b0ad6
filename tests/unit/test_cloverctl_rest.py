"""cloverctl without a controller: where the controller address and token come from, the check
limits and their table, the human output of the stats, usage errors (exit 2) and an
unreachable controller (exit 3)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from cloverctl import check, rest
from cloverctl.main import cli
from cloverctl.visibility import format_config, format_stats
from stack import secrets


def _opts(**kwargs: object) -> rest.Options:
    return rest.Options(**kwargs)  # type: ignore[arg-type]


def test_the_controller_address_comes_from_the_flag_then_the_environment_then_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "cloverctl.yaml"
    conf.write_text("ControllerIP: 10.145.71.21\n")
    env = {"CLOVER_CONTROLLER_URL": "http://127.0.0.1:18000/"}
    assert rest.resolve(_opts(controller="10.0.0.1:9000", config=str(conf)), env) == ("http://10.0.0.1:9000",
                                                                                      "--controller")  # fmt: skip
    assert rest.resolve(_opts(config=str(conf)), env) == ("http://127.0.0.1:18000", "CLOVER_CONTROLLER_URL")
    assert rest.resolve(_opts(config=str(conf)), {}) == ("http://10.145.71.21:8000", f"{conf} ControllerIP")
    conf.write_text("ControllerIP: 10.145.71.21\nControllerPort: 32044\n")
    assert rest.resolve(_opts(config=str(conf)), {})[0] == "http://10.145.71.21:32044"
    conf.write_text("ControllerIP: https://clover.example/\n")
    assert rest.resolve(_opts(config=str(conf)), {})[0] == "https://clover.example"


def test_without_any_setting_the_local_default_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("sys.argv", [str(tmp_path / "bin" / "cloverctl")])
    assert rest.resolve(_opts(), {}) == ("http://127.0.0.1:8000", "the default")
    (tmp_path / ".cloverctl.yaml").write_text("ControllerIP: 192.0.2.7\nToken: abc\n")
    assert rest.resolve(_opts(), {}) == ("http://192.0.2.7:8000", f"{tmp_path / '.cloverctl.yaml'} ControllerIP")
    assert rest.token(_opts(), {}) == "abc"
    assert rest.token(_opts(), {"CLOVER_API_TOKEN": "env"}) == "env"
    assert rest.token(_opts(token="flag"), {"CLOVER_API_TOKEN": "env"}) == "flag"


def test_the_local_stacks_token_is_the_last_fallback_and_only_for_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("sys.argv", [str(tmp_path / "bin" / "cloverctl")])
    env = {"CLOVER_STATE_DIR": str(tmp_path / "state")}
    file = tmp_path / "state" / "secrets" / "api-token"
    assert rest.token_and_source(_opts(), env) == (None, f"nowhere (no {file})")
    made = secrets.ensure(tmp_path / "state", {})
    assert file in made and file.stat().st_mode & 0o777 == 0o600
    local = file.read_text().strip()
    assert rest.token_and_source(_opts(), env, "http://127.0.0.1:18000") == (local, str(file))
    assert rest.token_and_source(_opts(), env, "http://localhost:8000")[0] == local
    assert rest.token(_opts(), env, "http://10.0.0.5:8000") is None  # never sent elsewhere
    assert rest.token_and_source(_opts(), {**env, "CLOVER_API_TOKEN": "env"}) == ("env", "CLOVER_API_TOKEN")
    (tmp_path / ".cloverctl.yaml").write_text("Token: abc\n")
    assert rest.token_and_source(_opts(), env)[0] == "abc"


def test_local_token_prints_the_token_local_up_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOVER_API_TOKEN", raising=False)
    state = tmp_path / "state"
    monkeypatch.setenv("CLOVER_STATE_DIR", str(state))  # restored afterwards: --state-dir sets it for the parts
    missing = CliRunner().invoke(cli, ["local", "token", "--state-dir", str(state)])
    assert missing.exit_code == 1
    assert f"{state / 'secrets' / 'api-token'} does not exist yet (cloverctl local up makes it)" in missing.output
    secrets.ensure(state, {})
    shown = CliRunner().invoke(cli, ["local", "token", "--state-dir", str(state)])
    assert (shown.exit_code, shown.output) == (0, (state / "secrets" / "api-token").read_text())


def test_cloverctl_sends_the_local_token_and_says_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOVER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("CLOVER_API_TOKEN", raising=False)
    secrets.ensure(tmp_path / "state", {})
    sent: list[dict[str, str]] = []

    def fake(method: str, url: str, **kwargs: object) -> object:
        sent.append(kwargs["headers"])  # type: ignore[arg-type]
        reply = requests.Response()
        reply.status_code, reply._content = 200, b"ok"
        return reply

    monkeypatch.setattr(requests, "request", fake)
    result = CliRunner().invoke(cli, ["-v", "--controller", "http://127.0.0.1:9", "stop", "ids"])
    token = (tmp_path / "state" / "secrets" / "api-token").read_text().strip()
    assert result.exit_code == 0, result.output
    assert sent == [{"Accept": "text/plain, application/json;q=0.9", "Authorization": f"Bearer {token}"}]
    assert f"API token: from {tmp_path / 'state' / 'secrets' / 'api-token'}" in result.output
    assert token not in result.output


def test_a_settings_file_that_cannot_be_used_is_a_usage_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("ControllerIP: [unclosed\n")
    with pytest.raises(rest.UsageProblem, match="cannot read"):
        rest.resolve(_opts(config=str(bad)), {})
    bad.write_text("- a list\n")
    with pytest.raises(rest.UsageProblem, match="expected a mapping"):
        rest.resolve(_opts(config=str(bad)), {})
    with pytest.raises(rest.UsageProblem, match="no such file"):
        rest.resolve(_opts(config=str(tmp_path / "missing.yaml")), {})


def test_durations_rates_and_limits_are_parsed() -> None:
    assert [check.parse_duration_ms(t) for t in ("50ms", "0.5s", "800us", "12", "1m")] == [50.0, 500.0, 0.8, 12.0,
                                                                                          60000.0]  # fmt: skip
    assert [check.parse_rate(t) for t in ("1%", "0.5%", "0.01", "0")] == [0.01, 0.005, 0.01, 0.0]
    p99 = next(m for m in check.METRICS if m.check == "--max-p99")
    assert check.parse_limit(p99, "proxy_access_control=50ms") == check.Limit("proxy-access-control", p99, 50.0)
    assert check.parse_limit(p99, "0.2s") == check.Limit(check.EVERY, p99, 200.0)
    for bad, message in (("x=fast", "'fast' is not a duration"), ("=5ms", "the service before '=' is empty")):
        with pytest.raises(check.SpecError, match=message):
            check.parse_limit(p99, bad)
    rate = next(m for m in check.METRICS if m.check == "--max-error-rate")
    with pytest.raises(check.SpecError, match=r"outside 0%\.\.100%"):
        check.parse_limit(rate, "120%")


ROWS = [
    {"name": "proxy-access-control", "p99": "60.00", "error_rate": "0.0300", "request_count": "200",
     "window": {"p99": "20.00", "error_rate": "0.0000", "request_count": "10"}},
    {"name": "clover-server1", "p99": "NA", "error_rate": "NA", "request_count": "0", "window": {}},
]  # fmt: skip


def _limits(*specs: tuple[str, str]) -> list[check.Limit]:
    return [check.parse_limit(next(m for m in check.METRICS if m.check == o), s) for o, s in specs]


def test_limits_are_checked_per_service_and_a_service_without_data_fails() -> None:
    limits = _limits(("--max-p99", "proxy-access-control=50ms"), ("--max-error-rate", "1%"),
                     ("--min-requests", "clover-server3=1"))  # fmt: skip
    outcomes = check.evaluate(limits, ROWS)
    assert [(o.service, o.check, o.limit, o.actual, o.result) for o in outcomes] == [
        ("clover-server1", "error rate", "≤ 1.00%", "NA", "NO DATA"),
        ("clover-server3", "requests", "≥ 1", "NA", "NO DATA"),
        ("proxy-access-control", "p99", "≤ 50.00 ms", "60.00 ms", "FAIL"),
        ("proxy-access-control", "error rate", "≤ 1.00%", "3.00%", "FAIL"),
    ]
    assert len(check.failed(outcomes)) == 4
    assert check.table(outcomes).splitlines() == [
        "SERVICE               CHECK       LIMIT       ACTUAL    RESULT",
        "clover-server1        error rate  ≤ 1.00%     NA        NO DATA",
        "clover-server3        requests    ≥ 1         NA        NO DATA",
        "proxy-access-control  p99         ≤ 50.00 ms  60.00 ms  FAIL",
        "proxy-access-control  error rate  ≤ 1.00%     3.00%     FAIL",
    ]


def test_the_window_figures_and_allow_missing() -> None:
    limits = _limits(("--max-p99", "50ms"), ("--max-error-rate", "proxy-access-control=1%"))
    outcomes = check.evaluate(limits, ROWS, window=True, allow_missing=True)
    assert [(o.service, o.check, o.actual, o.result) for o in outcomes] == [
        ("clover-server1", "p99", "NA", "skipped"),
        ("proxy-access-control", "p99", "20.00 ms", "ok"),
        ("proxy-access-control", "error rate", "0.00%", "ok"),
    ]
    assert check.failed(outcomes) == []


def test_stats_and_config_for_people() -> None:
    stats = {
        "trace_count": "3", "span_count": "12", "metric_count": None,
        "response_times": [{"name": "a", "request_count": "4", "min": "1.00", "avg": "2.00", "max": "3.00",
                            "p50": "2.00", "p90": "3.00", "p99": "3.00", "p999": "3.00", "error_rate": "0.2500",
                            "request_rate": "0.40", "source": "clovisor"}],
        "request_url_count": [["/x", 1.0], ["/y", 3.0]],
        "request_urls": ["/x", "/y"],
    }  # fmt: skip
    text = format_stats(stats)
    assert text.splitlines()[:9] == [
        "System counts:",
        "         COUNT",
        "traces   3",
        "spans    12",
        "metrics  -",
        "",
        "Requests and response times in ms (whole retention; each request once, SOURCE: where measured):",
        "SERVICE  REQUESTS  MIN   AVG   MAX   P50   P90   P99   P99.9  ERROR RATE  REQ/S  SOURCE",
        "a        4         1.00  2.00  3.00  2.00  3.00  3.00  3.00   25.00%      0.40   clovisor",
    ]
    assert "Spans per URL (highest 2):\nCOUNT  VALUE\n3      /y\n1      /x" in text
    assert "  request URLs (2): /x, /y" in text
    assert format_config({"visibility_services": ["a", "b"], "custom_metrics": []}) == (
        "Tracked services: a, b\nCustom metrics: -"
    )


def test_usage_problems_exit_2_and_an_unreachable_controller_exits_3(tmp_path: Path) -> None:
    runner = CliRunner()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"CLOVER_CONTROLLER_URL": f"http://127.0.0.1:{port}", "HOME": str(tmp_path)}
    result = runner.invoke(cli, ["init", "visibility"], env=env)
    assert result.exit_code == 3
    assert result.output == (
        f"Error: cannot reach the clover-controller at http://127.0.0.1:{port} (address from CLOVER_CONTROLLER_URL):"
        " connection refused or host unreachable. Set --controller, CLOVER_CONTROLLER_URL or ControllerIP in "
        "~/.cloverctl.yaml.\n"
    )
    result = runner.invoke(cli, ["set", "visibility", "-f", str(tmp_path / "none.yaml")], env=env)
    assert result.exit_code == 2 and "none.yaml: no such file" in result.output
    result = runner.invoke(cli, ["check", "visibility"], env=env)
    assert (result.exit_code, result.output) == (
        2, "Error: give at least one limit, e.g. --max-p99 proxy-access-control=50ms\n")  # fmt: skip
    result = runner.invoke(cli, ["check", "visibility", "--max-p99", "x=soon"], env=env)
    assert (result.exit_code, result.output) == (
        2, "Error: --max-p99 'x=soon': 'soon' is not a duration (like 50ms, 0.5s, 800us)\n")  # fmt: skip
    result = runner.invoke(cli, ["get", "visibility", "-s", "all", "-c", "all"], env=env)
    assert (result.exit_code, result.output) == (2, "Error: give -s/--stat or -c/--conf, not both\n")
    assert runner.invoke(cli, ["get", "visibility", "-s", "nothing"], env=env).exit_code == 2


def test_help_works_for_every_command() -> None:
    runner = CliRunner()

    def walk(path: list[str]) -> int:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage: " in result.output
        count = 1
        command = cli
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        for name in getattr(command, "commands", {}):
            count += walk([*path, name])
        return count

    assert walk([]) > 40
    incomplete = runner.invoke(cli, ["clear"])
    assert incomplete.exit_code == 1 and incomplete.output.startswith("Incomplete command\n")


def _service(node_port: int | None = None, ingress: list[dict[str, str]] | None = None) -> object:
    from types import SimpleNamespace as NS

    balancer = NS(ingress=[NS(ip=i.get("ip"), hostname=i.get("hostname")) for i in ingress or []])
    return NS(spec=NS(ports=[NS(node_port=node_port)]), status=NS(load_balancer=balancer))


class FakeCore:
    def __init__(self, *services: object) -> None:
        self.services = list(services)
        self.selectors: list[str] = []

    def list_service_for_all_namespaces(self, field_selector: str, _request_timeout: float) -> object:
        from types import SimpleNamespace

        self.selectors.append(field_selector)
        return SimpleNamespace(items=self.services)


def test_a_bare_controller_ip_takes_the_port_of_the_clover_controller_service_as_in_the_original() -> None:
    core = FakeCore(_service(node_port=32044))
    assert rest.controller_from_service("10.145.71.21", {}, core) == "http://10.145.71.21:32044"
    assert core.selectors == ["metadata.name=clover-controller"]
    balanced = FakeCore(_service(node_port=32044, ingress=[{"hostname": "clover.example"}]))
    assert rest.controller_from_service("10.145.71.21", {}, balanced) == "http://clover.example"
    assert rest.controller_from_service("10.145.71.21", {}, FakeCore()) is None
    assert rest.controller_from_service("10.145.71.21", {}, FakeCore(_service())) is None


def test_an_unreachable_cluster_leaves_the_default_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: k, cluster: {{server: 'http://127.0.0.1:{closed}'}}}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\nusers: [{name: u, user: {}}]\n"
    )
    conf = tmp_path / "cloverctl.yaml"
    conf.write_text("ControllerIP: 10.145.71.21\n")
    env = {"KUBECONFIG": str(kubeconfig)}
    assert rest.resolve(_opts(config=str(conf)), env) == ("http://10.145.71.21:8000", f"{conf} ControllerIP")
    assert rest.resolve(_opts(config=str(conf)), {"KUBECONFIG": str(tmp_path / "none")})[0] == (
        "http://10.145.71.21:8000"
    )


def test_the_service_address_is_used_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "cloverctl.yaml"
    conf.write_text("ControllerIP: 10.145.71.21\n")
    monkeypatch.setattr(rest, "kube_core", lambda env: FakeCore(_service(node_port=32044)))
    monkeypatch.setattr(rest, "kubeconfig", lambda env: conf)  # any file that exists
    assert rest.resolve(_opts(config=str(conf)), {}) == (
        "http://10.145.71.21:32044", f"{conf} ControllerIP and the Service clover-controller")  # fmt: skip
    conf.write_text("ControllerIP: 10.145.71.21\nControllerPort: 9000\n")
    assert rest.resolve(_opts(config=str(conf)), {})[0] == "http://10.145.71.21:9000"
