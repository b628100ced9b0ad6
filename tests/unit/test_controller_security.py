"""What the controller lets in (issue 18): routes that change something refuse another site's
browser pages but keep working for cloverctl and curl, bodies are limited in size, type, depth
and yaml aliases before anything works on them, no input gives a 500, and /snort/get_events
reads only alert hashes. The backing services are on a closed port: a request that gets through
every check ends in 503 (the collector, Redis) or in the sample chain's 400 for an unknown pod."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from clover.config import Config, ConfigError
from controller import openapi
from controller.api import ROUTES, services_of
from controller.guard import MAX_DEPTH
from tests.unit.offline_controller import offline_app

TOKEN = "s3cret"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
EVIL = "http://evil.example"
SUFFIX = (
    "; a change is accepted only from this controller's own pages or from a client that sends no Origin "
    "(cloverctl, curl)"
)
SERVICES = {"services": [{"name": "proxy-access-control"}]}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    app = offline_app(tmp_path_factory.mktemp("state"), api_max_body_bytes=4096)
    yield app.test_client()
    services_of(app).close()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    app = offline_app(tmp_path_factory.mktemp("state"), api_token=TOKEN, api_max_body_bytes=4096)
    yield app.test_client()
    services_of(app).close()


def answer(reply: Any) -> tuple[int, str, str | None]:
    assert reply.mimetype == "application/json", reply.data
    return reply.status_code, reply.json["error"], reply.json["field"]


def collector_down(client: FlaskClient) -> str:
    return answer(client.get("/collector/status"))[1]


# -- cross-site ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/collector/init", "/collector/truncate", "/collector/stop", "/visibility/clear",
                                  "/snort/start", "/snort/stop"])  # fmt: skip
def test_the_get_forms_of_changes_refuse_a_foreign_origin(client: FlaskClient, path: str) -> None:
    expected = f"cross-site request refused: Origin '{EVIL}' is not this controller (localhost){SUFFIX}"
    assert answer(client.get(path, headers={"Origin": EVIL})) == (403, expected, "Origin")


def test_a_cross_site_navigation_or_a_foreign_referer_changes_nothing(client: FlaskClient) -> None:
    for site in ("cross-site", "same-site"):
        reply = client.get("/collector/stop", headers={"Sec-Fetch-Site": site})
        expected = f"cross-site request refused: Sec-Fetch-Site is {site} (localhost){SUFFIX}"
        assert answer(reply) == (403, expected, "Sec-Fetch-Site")
    reply = client.get("/visibility/clear", headers={"Referer": f"{EVIL}/page.html"})
    expected = f"cross-site request refused: Referer '{EVIL}/page.html' is not this controller (localhost){SUFFIX}"
    assert answer(reply) == (403, expected, "Referer")
    for origin in ("null", "http://localhost:8000", "https://localhost", "http://evil.example:80"):
        assert answer(client.get("/collector/init", headers={"Origin": origin}))[0::2] == (403, "Origin"), origin


def test_a_text_plain_post_from_another_page_is_refused_before_its_body_is_read(client: FlaskClient) -> None:
    reply = client.post("/visibility/set", data='{"services": [{"name": "x"}]}', content_type="text/plain",
                        headers={"Origin": EVIL})  # fmt: skip
    assert answer(reply)[0::2] == (403, "Origin")


def test_curl_cloverctl_and_the_controllers_own_pages_still_get_through(client: FlaskClient) -> None:
    down = collector_down(client)
    same = [{}, {"Origin": "http://localhost"}, {"Origin": "http://LOCALHOST:80"},
            {"Referer": "http://localhost/dashboard/"}, {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"},
            {"Host": "ctl.example:8000", "Origin": "http://ctl.example:8000"},
            {"X-Forwarded-Host": "clover.example", "Origin": "http://clover.example"}]  # fmt: skip
    for headers in same:
        assert answer(client.get("/collector/init", headers=headers)) == (503, down, None), headers


def test_reading_routes_do_not_look_at_the_origin(client: FlaskClient) -> None:
    assert answer(client.get("/collector/status", headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"}))[0] == 503


def test_with_a_token_the_site_check_comes_first_and_the_token_still_counts(guarded: FlaskClient) -> None:
    assert answer(guarded.get("/snort/stop", headers={**BEARER, "Origin": EVIL}))[0::2] == (403, "Origin")
    assert answer(guarded.get("/collector/init"))[0] == 401
    assert answer(guarded.get("/collector/init", headers=BEARER)) == (503, collector_down(guarded), None)


# -- body size and type -------------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_before_the_token_is_checked(guarded: FlaskClient) -> None:
    big = '{"services": [' + ",".join(['{"name": "x"}'] * 400) + "]}"
    expected = (413, "the request body is larger than 4096 bytes (CLOVER_API_MAX_BODY_BYTES)", None)
    assert answer(guarded.post("/visibility/set", data=big, content_type="application/json")) == expected
    assert answer(guarded.get("/visibility/get/stats/all", data=big, content_type="application/json")) == expected


def test_the_body_limit_is_a_setting() -> None:
    assert Config.from_env({}).api_max_body_bytes == 4 * 1024 * 1024
    assert Config.from_env({"CLOVER_API_MAX_BODY_BYTES": "65536"}).api_max_body_bytes == 65536
    for bad, why in (("0", "must be positive"), ("4MiB", "is not a whole number")):
        with pytest.raises(ConfigError) as err:
            Config.from_env({"CLOVER_API_MAX_BODY_BYTES": bad})
        assert str(err.value) == f"CLOVER_API_MAX_BODY_BYTES={bad!r} {why}"


@pytest.mark.parametrize(
    ("path", "kind", "wanted"),
    [
        ("/visibility/set", "text/plain", "JSON (Content-Type: application/json) or yaml (application/yaml)"),
        ("/collector/init", "application/x-www-form-urlencoded",
         "JSON (Content-Type: application/json) or yaml (application/yaml)"),
        ("/upload", "application/json",
         "a form (multipart/form-data or application/x-www-form-urlencoded)"),
    ],
)  # fmt: skip
def test_a_change_with_a_body_of_another_type_is_refused(
    client: FlaskClient, path: str, kind: str, wanted: str
) -> None:
    method = "GET" if path == "/collector/init" else "POST"
    reply = client.open(path, method=method, data='{"a.name": "x"}', content_type=kind)
    assert answer(reply) == (415, f"a body on {path} must be {wanted}, not {kind}", "Content-Type")


def test_json_and_yaml_types_are_read(client: FlaskClient) -> None:
    for kind in ("application/json", "application/merge-patch+json", "application/yaml", "text/x-yaml"):
        reply = client.post("/visibility/set", data='{"services": []}', content_type=kind)
        assert answer(reply) == (400, "Specify at least one service to track", "services"), kind


# -- what a body may hold -----------------------------------------------------------------------

ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
) + "services: [*i]\n"  # fmt: skip


def test_yaml_aliases_are_refused_before_anything_is_built(client: FlaskClient) -> None:
    assert len(ALIAS_BOMB) < 400
    reply = client.post("/visibility/set", data=ALIAS_BOMB, content_type="application/yaml")
    assert answer(reply) == (400, "the body's yaml uses an alias (*a); aliases are not accepted", None)


@pytest.mark.parametrize("kind", ["application/json", "application/yaml"])
def test_nesting_is_limited(client: FlaskClient, kind: str) -> None:
    too_deep = (400, f"the body nests deeper than {MAX_DEPTH} levels", None)
    for depth in (MAX_DEPTH + 1, 2000):
        reply = client.post("/visibility/set", data="[" * depth + "]" * depth, content_type=kind)
        assert answer(reply) == too_deep, depth
    within = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert answer(client.post("/collector/start", data=within, content_type=kind))[0:2] == (
        400, "Invalid value in json/yaml: the body must be a JSON object, not a list")  # fmt: skip


@pytest.mark.parametrize(
    ("body", "kind", "message"),
    [
        ('{"services": [{"name": "x"}], "custom_metrics": [{"metric": "\\ud800"}]}', "application/json",
         "the body has a character that is not Unicode text: surrogates not allowed"),
        ('{"server_name": "clover-server1", "locations": [{"uri_match": "/", "latency_ms": NaN}]}',
         "application/json", "the body is not valid JSON: NaN is not a JSON number"),
        ("{1: x, services: y}", "application/yaml", "the body's field names must be strings"),
    ],
)  # fmt: skip
def test_what_json_or_yaml_allow_but_the_services_cannot_take_is_refused(
    client: FlaskClient, body: str, kind: str, message: str
) -> None:
    path = "/nginx/server" if "server_name" in body else "/visibility/set"
    assert answer(client.post(path, data=body, content_type=kind)) == (400, message, None)


# -- no 500 -------------------------------------------------------------------------------------

NOT_A_HOST = "is not a host name (letters, digits, '-', '_' and '.'; labels of 1-63 characters, 253 in all)"


@pytest.mark.parametrize("name", ["a" * 64, "a..b", "a%00b", "%C3%BC" * 40])
def test_a_name_that_is_not_a_host_name_is_refused_naming_the_field(client: FlaskClient, name: str) -> None:
    status, error, field = answer(client.get(f"/nginx/config/{name}"))
    assert (status, field) == (400, "name") and error.endswith(NOT_A_HOST)
    body = {"lb_name": name.replace("%00", "\0"), "lb_list": [{"url": "clover-server1:9180"}]}
    status, error, field = answer(client.post("/nginx/lb", json=body))
    assert (status, field) == (400, "lb_name") and error.startswith("Invalid value in json/yaml: lb_name: ")


@pytest.mark.parametrize(
    ("path", "body", "field", "message"),
    [
        ("/nginx/server", {"server_name": "clover-server1", "locations": [{"uri_match": "/", "status": 2**40}]},
         "locations[0].status", "locations[0].status must be at most 2147483647, not 1099511627776"),
        ("/nginx/server", {"server_name": "clover-server1", "locations": [{"uri_match": "/", "response_size": 2**31}]},
         "locations[0].response_size", "locations[0].response_size must be at most 2147483647, not 2147483648"),
        ("/nginx/proxy", {"block_seconds": "99999999999"}, "block_seconds",
         "block_seconds must be at most 2147483647, not '99999999999'"),
        ("/jmeter/start", {"num_slaves": 2200000000}, "num_slaves",
         "num_slaves: must be a whole number (0 to 2147483647), not 2200000000"),
    ],
)  # fmt: skip
def test_numbers_beyond_the_messages_int32_fields_are_refused_naming_the_field(
    client: FlaskClient, path: str, body: dict[str, Any], field: str, message: str
) -> None:
    assert answer(client.post(path, json=body)) == (400, f"Invalid value in json/yaml: {message}", field)


# -- /snort/get_events --------------------------------------------------------------------------


def test_get_events_reads_only_alert_hashes(client: FlaskClient) -> None:
    for key in ("visibility_services", "snort_event:", "snort_event:1:x", "snort_event:١"):
        status, error, field = answer(client.get("/snort/get_events", query_string={"event_key": key, "field": "x"}))
        assert (status, field) == (400, "event_key") and error == (
            f"Invalid IDS event query: event_key: must be an alert key snort_event:<number>, not {key!r}"
        ), key
    status, error, field = answer(client.get("/snort/get_events", json={"event_key": "snort_event:1\n", "field": "x"}))
    assert (status, error, field) == (
        400, "event_key 'snort_event:1\\n' must be an alert key snort_event:<number>", "event_key")  # fmt: skip
    assert answer(client.get("/snort/get_events", json=[1]))[0:2] == (
        400, "Invalid IDS event query: the body must be a JSON object, not a list")  # fmt: skip
    assert answer(client.get("/snort/get_events?event_key=snort_event:12&field=msg"))[0] == 503  # Redis


def test_the_openapi_description_says_what_a_change_may_be_refused_for(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").json
    for route in ROUTES:
        for method in route.methods:
            responses = doc["paths"][openapi._path(route)][method.lower()]["responses"]
            assert ({"413", "415"} <= set(responses)) == bool(route.mutating or route.body), route.path
            if route.mutating:
                assert "another site's page" in responses["403"]["description"]
    event_key = doc["components"]["schemas"]["SnortEventQuery"]["properties"]["event_key"]
    assert event_key["pattern"] == "^snort_event:[0-9]+$"
