"""Test-plan yaml: the original guide's syntax, the additions, and refusals that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clover.config import CHECKOUT_DIR, Config, ConfigError
from validation.plan import LoadSpec, PlanError, Request, load_plan_file, load_plan_text, parse_plan, plan_to_data

GUIDE_YAML = CHECKOUT_DIR / "cloverctl" / "yaml" / "jmeter_testplan.yaml"


def plan_with(url_entry: dict[str, Any], **load: Any) -> dict[str, Any]:
    return {"load_spec": {"num_threads": 1, "loops": 1, **load}, "url_list": [{"name": "u", **url_entry}]}


def problems(data: object) -> list[tuple[str, str]]:
    with pytest.raises(PlanError) as exc:
        parse_plan(data)
    return exc.value.problems


def test_the_original_guide_plan_reads_as_written() -> None:
    plan = load_plan_file(GUIDE_YAML)
    assert plan.load == LoadSpec(num_threads=5, loops=2, ramp_time=60, duration=80)
    assert plan.requests == (
        Request(
            "url1",
            "http://proxy-access-control.default:9180",
            "http",
            "proxy-access-control.default",
            9180,
            "/",
            "GET",
            "chrome",
        ),
        Request(
            "url2",
            "http://proxy-access-control.default:9180",
            "http",
            "proxy-access-control.default",
            9180,
            "/",
            "GET",
            "safari",
        ),
    )
    assert plan.name == "test.jmx"
    assert plan.samples_expected == 20


@pytest.mark.parametrize(
    ("url", "protocol", "expected"),
    [
        ("proxy-access-control.default:9180", None, ("http", "proxy-access-control.default", 9180, "/")),
        ("10.0.0.7", None, ("http", "10.0.0.7", 80, "/")),
        ("https://api.example.com", None, ("https", "api.example.com", 443, "/")),
        ("api.example.com:8443/v1", "https", ("https", "api.example.com", 8443, "/v1")),
        ("http://h:81/a/b?x=1&y=%20z", None, ("http", "h", 81, "/a/b?x=1&y=%20z")),
        ("HTTP://H:81?q=", None, ("http", "h", 81, "/?q=")),
    ],
)
def test_urls_keep_scheme_port_path_and_query(
    url: str, protocol: str | None, expected: tuple[str, str, int, str]
) -> None:
    entry: dict[str, Any] = {"url": url}
    if protocol:
        entry["protocol"] = protocol
    r = parse_plan(plan_with(entry)).requests[0]
    assert (r.protocol, r.host, r.port, r.path) == expected


def test_headers_and_body_are_kept_in_order_and_method_is_normalised() -> None:
    entry = {
        "url": "http://h/api",
        "method": "post",
        "user-agent": 7.1,
        "headers": {"Content-Type": "application/json", "X-Count": 3},
        "body": '{"a": "${x}"}',
    }
    r = parse_plan(plan_with(entry)).requests[0]
    assert (r.method, r.user_agent, r.headers, r.body) == (
        "POST",
        "7.1",
        (("Content-Type", "application/json"), ("X-Count", "3")),
        '{"a": "${x}"}',
    )


def test_loops_zero_with_duration_runs_forever_until_the_duration() -> None:
    plan = parse_plan(plan_with({"url": "h"}, loops=0, duration=30))
    assert plan.load.forever and plan.load.duration == 30
    assert plan.samples_expected is None


def test_numbers_may_be_quoted_and_optional_load_fields_default() -> None:
    plan = parse_plan({"load_spec": {"num_threads": "3"}, "url_list": [{"name": "a", "url": "h"}]})
    assert plan.load == LoadSpec(num_threads=3, loops=1, ramp_time=0, duration=0)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ([1, 2], "", "a test plan is a mapping with load_spec and url_list, not a list"),
        ({"url_list": [{"name": "a", "url": "h"}]}, "load_spec", "is required"),
        ({"load_spec": {"num_threads": 1}}, "url_list", "is required"),
        ({"load_spec": {"num_threads": 1}, "url_list": []}, "url_list", "is empty: give at least one request"),
        ({"load_spec": {"num_threads": 1}, "url_list": "h"}, "url_list", "must be a list of requests, not str 'h'"),
        (plan_with({"url": "h"}, num_threads=0), "load_spec.num_threads", "must be at least 1, not 0"),
        (plan_with({"url": "h"}, num_threads="five"), "load_spec.num_threads", "must be a whole number, not 'five'"),
        (
            plan_with({"url": "h"}, num_threads=2.5),
            "load_spec.num_threads",
            "must be a whole number, not a decimal number (2.5)",
        ),
        (plan_with({"url": "h"}, loops=True), "load_spec.loops", "must be a whole number, not a boolean (true)"),
        (plan_with({"url": "h"}, loops=-1), "load_spec.loops", "must be at least 0, not -1"),
        (plan_with({"url": "h"}, ramp_time=2**31), "load_spec.ramp_time", "must be at most 2147483647, not 2147483648"),
        (
            plan_with({"url": "h"}, loops=0),
            "load_spec.duration",
            "loops 0 runs forever: give a duration (seconds) to stop it",
        ),
        (
            plan_with({"url": "h"}, ramp_tme=3),
            "load_spec.ramp_tme",
            "unknown field (did you mean ramp_time? known: num_threads, loops, ramp_time, duration)",
        ),
        (
            plan_with({"url": "h", "user_agent": "x"}),
            "url_list[0].user_agent",
            "unknown field (did you mean user-agent? known: name, url, method, user-agent, headers, body, protocol)",
        ),
        ({"load_spec": {"num_threads": 1}, "url_list": [{"url": "h"}]}, "url_list[0].name", "is required"),
        (plan_with({}), "url_list[0].url", "is required"),
        (plan_with({"url": "ftp://h"}), "url_list[0].url", "'ftp://h': the scheme must be http or https, not 'ftp'"),
        (
            plan_with({"url": "http://h:99999"}),
            "url_list[0].url",
            "'http://h:99999' is not a url (Port out of range 0-65535)",
        ),
        (
            plan_with({"url": "http://h/a b"}),
            "url_list[0].url",
            "'http://h/a b' contains ' ', which a url cannot carry: percent-encode (space is %20)",
        ),
        (
            plan_with({"url": "http://h/{x}"}),
            "url_list[0].url",
            "'http://h/{x}' contains '{', '}', which a url cannot carry: percent-encode (space is %20)",
        ),
        (
            plan_with({"url": "http://u:p@h/"}),
            "url_list[0].url",
            "'http://u:p@h/': credentials in the url are not supported (use an Authorization header)",
        ),
        (plan_with({"url": "http://:80/"}), "url_list[0].url", "'http://:80/' has no host"),
        (
            plan_with({"url": "https://h", "protocol": "http"}),
            "url_list[0].url",
            "'https://h' says https but protocol says http",
        ),
        (plan_with({"url": "h", "protocol": "gopher"}), "url_list[0].protocol", "must be http or https, not 'gopher'"),
        (
            plan_with({"url": "h", "method": "FETCH"}),
            "url_list[0].method",
            "must be one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS, TRACE, not 'FETCH'",
        ),
        (plan_with({"url": "h", "user-agent": ["a"]}), "url_list[0].user-agent", "must be a string, not a list"),
        (
            plan_with({"url": "h", "user-agent": "a\nb"}),
            "url_list[0].user-agent",
            "must not contain line breaks or NUL",
        ),
        (
            plan_with({"url": "h", "headers": ["X: 1"]}),
            "url_list[0].headers",
            "must be a mapping of header name to value, not a list",
        ),
        (
            plan_with({"url": "h", "headers": {"Bad Name": "1"}}),
            "url_list[0].headers.Bad Name",
            "is not a valid header name",
        ),
        (
            plan_with({"url": "h", "user-agent": "a", "headers": {"user-agent": "b"}}),
            "url_list[0].headers.User-Agent",
            "repeats url_list[0].user-agent; give it once",
        ),
        (
            plan_with({"url": "h", "body": "x"}),
            "url_list[0].body",
            "a GET request has no body (body needs one of POST, PUT, PATCH, DELETE)",
        ),
        (
            {"load_spec": {"num_threads": 1}, "url_list": ["h"]},
            "url_list[0]",
            "must be a mapping with name, url, method, user-agent; not str 'h'",
        ),
    ],
)
def test_malformed_plans_are_refused_naming_the_field(data: object, field: str, message: str) -> None:
    assert problems(data) == [(field, message)]


def test_every_problem_is_reported_at_once() -> None:
    data = {
        "load_spec": {"num_threads": 0, "loops": "x"},
        "url_list": [{"name": "a", "url": "h"}, {"name": "a", "url": "h2"}, {"name": "b", "url": "ftp://x"}],
    }
    assert [field for field, _ in problems(data)] == [
        "load_spec.num_threads",
        "load_spec.loops",
        "url_list[1].name",
        "url_list[2].url",
    ]
    assert problems(data)[2] == ("url_list[1].name", "'a' is already the name of url_list[0]")


def test_the_error_text_lists_field_and_problem() -> None:
    with pytest.raises(PlanError, match=r"^load_spec.num_threads: is required; url_list: is required$"):
        parse_plan({"load_spec": {}})


def test_yaml_syntax_errors_name_the_line() -> None:
    with pytest.raises(PlanError) as exc:
        load_plan_text("load_spec:\n  num_threads: 1\nurl_list: [\n", "p.yaml")
    assert exc.value.problems == [
        ("", "p.yaml is not valid yaml: line 4, column 1: expected the node content, but found '<stream end>'")
    ]


def test_empty_and_unreadable_files_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(PlanError) as exc:
        load_plan_file(empty)
    assert exc.value.problems == [("", "empty.yaml is empty")]
    missing = tmp_path / "missing.yaml"
    with pytest.raises(PlanError) as exc:
        load_plan_file(missing)
    assert exc.value.problems == [("", f"cannot read {missing}: [Errno 2] No such file or directory: '{missing}'")]


@pytest.mark.parametrize(
    ("raw", "name"), [(None, "test.jmx"), ("", "test.jmx"), ("smoke", "smoke.jmx"), ("a-1.jmx", "a-1.jmx")]
)
def test_plan_names(raw: str | None, name: str) -> None:
    assert parse_plan(plan_with({"url": "h"}), raw).name == name


@pytest.mark.parametrize("raw", ["../x", "a/b", ".hidden", "x" * 97, "a..jmx"])
def test_plan_names_that_could_escape_the_plan_directory_are_refused(raw: str) -> None:
    assert problems_with_name(raw)[0][0] == "test_plan"


def problems_with_name(raw: str) -> list[tuple[str, str]]:
    with pytest.raises(PlanError) as exc:
        parse_plan(plan_with({"url": "h"}), raw)
    return exc.value.problems


def test_plan_to_data_reads_back_to_the_same_plan() -> None:
    entry = {"url": "https://h:8443/p?q=1", "method": "PUT", "user-agent": "ua", "headers": {"X-A": "1"}, "body": "b"}
    plan = parse_plan(plan_with(entry, loops=0, duration=5, ramp_time=2))
    again = parse_plan(plan_to_data(plan))
    assert again.load == plan.load
    assert [
        (r.name, r.protocol, r.host, r.port, r.path, r.method, r.user_agent, r.headers, r.body) for r in again.requests
    ] == [("u", "https", "h", 8443, "/p?q=1", "PUT", "ua", (("X-A", "1"),), "b")]


def test_config_names_the_validation_endpoints() -> None:
    cfg = Config.from_env({})
    assert (cfg.validation_grpc, cfg.jmeter_slaves, cfg.jmeter_rmi_port) == ("127.0.0.1:50057", (), 1099)
    assert cfg.jmeter_dir == CHECKOUT_DIR / "stack" / "cache" / "jmeter" / "home"
    cfg = Config.from_env(
        {
            "CLOVER_VALIDATION_GRPC": "clover-jmeter-master.default:50054",
            "CLOVER_JMETER_SLAVES": "10.0.0.1:1099, 10.0.0.2",
            "CLOVER_JMETER_HOME": "/opt/jmeter",
            "CLOVER_JMETER_RMI_PORT": "2099",
        }
    )
    assert cfg.validation_grpc == "clover-jmeter-master.default:50054"
    assert cfg.jmeter_slaves == ("10.0.0.1:1099", "10.0.0.2")
    assert (cfg.jmeter_dir, cfg.jmeter_rmi_port) == (Path("/opt/jmeter"), 2099)
    with pytest.raises(ConfigError, match="CLOVER_VALIDATION_GRPC"):
        Config.from_env({"CLOVER_VALIDATION_GRPC": "nohost"})
