"""The controller's REST layer without services: request validation (every problem names its
field), the token on mutating routes, error replies when Redis or a service cannot be reached,
and the OpenAPI description. Redis and the gRPC services point at closed ports."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from flask.testing import FlaskClient

from clover.config import Config
from controller import openapi
from controller.api import ROUTES, services_of
from controller.app import create_app
from controller.schemas import BODIES, IDS_RULE, LB, PROXY, SERVER
from controller.services.chain import field_in
from controller.services.compose import Services
from sdc import specs as sdc_specs
from tests.unit.offline_controller import offline_config


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return offline_config(tmp_path_factory.mktemp("state"), jaeger_url="http://jaeger.example:16686",
                          prometheus_url="http://prom.example:9090")  # fmt: skip


@pytest.fixture(scope="module")
def client(cfg: Config) -> Iterator[FlaskClient]:
    app = create_app(cfg, dashboard=False)
    yield app.test_client()
    services_of(app).close()


@pytest.fixture(scope="module")
def guarded(cfg: Config) -> FlaskClient:
    return create_app(replace(cfg, api_token="s3cret"), dashboard=False).test_client()


def error(reply: Any) -> tuple[int, dict[str, Any]]:
    assert reply.mimetype == "application/json", reply.data
    return reply.status_code, reply.json


def test_the_original_test_pages_answer_their_texts(client: FlaskClient) -> None:
    pages = {
        "/test": "<h1 style='color:blue'>clover-controller up</h1>",
        "/collector/test": "<h1 style='color:blue'>Collector API Test Response</h1>",
        "/nginx/test": "<h1 style='color:blue'>Nginx API Test Response</h1>",
        "/snort/test": "<h1 style='color:blue'>Snort API Test Response</h1>",
        "/jmeter/test": "<h1 style='color:blue'>Jmeter API Test Response</h1>",
    }
    for path, text in pages.items():
        reply = client.get(path)
        assert (reply.status_code, reply.text) == (200, text), path


def test_visibility_set_without_services_answers_the_original_text_and_names_the_field(client: FlaskClient) -> None:
    for body in (None, {}, {"services": []}):
        reply = client.post("/visibility/set", json=body) if body is not None else client.post("/visibility/set")
        status, payload = error(reply)
        assert status == 400
        assert (payload["error"], payload["field"]) == ("Specify at least one service to track", "services")


@pytest.mark.parametrize(
    ("body", "message", "field"),
    [
        ({"services": [{"name": "a b"}]},
         "Invalid value in json/yaml: services[0].name: must be a service name (letters, digits, '.', '_' and '-'), "
         "not 'a b'", "services[0].name"),
        ({"services": [{"nam": "x"}]},
         "Invalid value in json/yaml: services[0].nam: unknown field (expected one of name)", "services[0].nam"),
        ({"services": [{"name": "x"}], "metric_prefixes": [{"prefix": "p_"}]},
         "Invalid value in json/yaml: metric_suffixes: metric_prefixes and metric_suffixes must be given together",
         "metric_suffixes"),
        ({"services": [{"name": "x"}], "custom_metrics": "m"},
         "Invalid value in json/yaml: custom_metrics: must be a list, not a string", "custom_metrics"),
        ({"services": [{"name": "x"}], "colour": "red"},
         "Invalid value in json/yaml: colour: unknown field (expected one of custom_metrics, metric_prefixes, "
         "metric_suffixes, services)", "colour"),
        ({"services": "proxy"}, "Specify at least one service to track", "services"),
    ],
)  # fmt: skip
def test_a_bad_visibility_config_is_refused_naming_the_field(
    client: FlaskClient, body: dict[str, Any], message: str, field: str
) -> None:
    status, payload = error(client.post("/visibility/set", json=body))
    assert (status, payload["error"], payload["field"]) == (400, message, field)


def test_every_problem_of_a_body_is_listed(client: FlaskClient) -> None:
    status, payload = error(client.post("/collector/set", json={"services": [{"nam": "x"}], "bogus": 1}))
    assert status == 400
    assert payload["problems"] == [
        {"field": "bogus", "message": "unknown field (expected one of custom_metrics, metric_prefixes, "
                                      "metric_suffixes, services)"},
        {"field": "services[0].nam", "message": "unknown field (expected one of name)"},
        {"field": "services[0].name", "message": "is required"},
    ]  # fmt: skip


def test_a_body_that_is_not_json_or_not_an_object_is_refused(client: FlaskClient) -> None:
    reply = client.post("/visibility/set", data="{services:", content_type="application/json")
    status, payload = error(reply)
    assert status == 400 and payload["error"].startswith("the body is not valid JSON: ")
    status, payload = error(client.post("/collector/start", json=[1, 2]))
    assert (status, payload["error"]) == (400, "Invalid value in json/yaml: the body must be a JSON object, not a list")


def test_a_yaml_body_is_read_with_a_yaml_content_type(client: FlaskClient) -> None:
    reply = client.post("/visibility/set", data="services: []\n", content_type="application/yaml")
    track = "Specify at least one service to track"
    expected = {
        "error": track,
        "field": "services",
        "status": 400,
        "problems": [{"field": "services", "message": track}],
    }
    assert error(reply) == (400, expected)


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"t_port": "99999"}, "t_port", "must be a port number (1-65535), not '99999'"),
        ({"m_port": "ninety"}, "m_port", "must be a port number (1-65535), not 'ninety'"),
        ({"sample_interval": "0"}, "sample_interval", "must be a number of seconds greater than 0, not '0'"),
        ({"sample_interval": -1}, "sample_interval", "must be a number of seconds greater than 0, not -1"),
        ({"t_backend": "kafka"}, "t_backend", "must be one of jaeger, zipkin, not 'kafka'"),
        ({"t_hots": "x"}, "t_hots", "unknown field (expected one of m_host, m_port, sample_interval, t_backend, "
                                    "t_host, t_port)"),
    ],
)  # fmt: skip
def test_a_bad_collector_start_body_is_refused_before_the_collector_is_called(
    client: FlaskClient, body: dict[str, Any], field: str, message: str
) -> None:
    status, payload = error(client.post("/collector/start", json=body))
    expected = (400, field, f"Invalid value in json/yaml: {field}: {message}")
    assert (status, payload["field"], payload["error"]) == expected


def test_missing_collector_fields_take_the_configured_defaults_one_by_one(cfg: Config) -> None:
    services = Services.open(cfg)
    visibility = services.visibility
    try:
        assert visibility.collector_settings(None) == {}
        assert visibility.collector_settings({"sample_interval": "2"}) == {"sinterval": 2.0}
        host_only = visibility.collector_settings({"t_host": "tracing.istio-system"})
        assert host_only == {"t_host": "tracing.istio-system", "t_port": 16686}
        partial = visibility.collector_settings({"m_port": "9091", "t_backend": "zipkin", "t_port": 80})
        assert partial == {"t_backend": "zipkin", "t_host": "127.0.0.1", "t_port": 80, "m_host": "prom.example",
                           "m_port": 9091}  # fmt: skip
        full = {"sample_interval": "10", "t_port": "80", "t_host": "jaeger-query.istio-system", "m_host": "p",
                "m_port": 1}  # fmt: skip
        assert visibility.collector_settings(full) == {"sinterval": 10.0, "t_host": "jaeger-query.istio-system",
                                                    "t_port": 80, "m_host": "p", "m_port": 1}  # fmt: skip
    finally:
        services.close()


def test_stat_and_config_types_and_query_arguments_are_checked(client: FlaskClient) -> None:
    assert error(client.get("/visibility/get/stats/everything")) == (
        400, {"error": "stat type 'everything' must be one of system, metrics, tracing, all", "field": "s_type",
              "status": 400})  # fmt: skip
    assert error(client.get("/visibility/get/stuff")) == (
        400, {"error": "config type 'stuff' must be one of services, metrics, all", "field": "c_type",
              "status": 400})  # fmt: skip
    status, payload = error(client.get("/visibility/get/stats/all?limit=-1"))
    assert (status, payload["field"], payload["error"]) == (400, "limit", "limit must be 0 or more, not -1")
    status, payload = error(client.post("/visibility/get/stats/all", json={"stat_type": "everything"}))
    assert (status, payload["field"]) == (400, "stat_type")
    status, payload = error(client.get("/visibility/get/urls/x?window=maybe"))
    assert (status, payload["field"]) == (400, "window")


def test_a_rule_deletion_names_what_is_wrong_before_the_ids_is_dialled(client: FlaskClient) -> None:
    cases = [
        (None, "sids: is required", "sids"),
        ({"sids": []}, "sids: must have at least 1 item(s)", "sids"),
        ({"sids": "10000003"}, "sids: must be a list, not a string", "sids"),
        ({"sids": ["10000003", "scan"]}, "sids[1]: 'scan' does not match '^[0-9]+$'", "sids[1]"),
        ({"sids": ["1"], "sid": "2"}, "sid: unknown field (expected one of sids)", "sid"),
    ]
    for body, problem, field in cases:
        status, payload = error(client.post("/snort/delrule", json=body))
        assert (status, payload["error"], payload["field"]) == (400, f"Invalid IDS rule deletion: {problem}", field)


def test_sample_chain_bodies_are_refused_with_the_chains_own_rules_before_any_pod_is_dialled(
    client: FlaskClient,
) -> None:
    cases = [
        ("/nginx/lb", {"lb_name": "http-lb-v2.default", "lb_list": []},
         "Invalid value in json/yaml: lb_list must name at least one server ({url: host:port})", "lb_list"),
        ("/nginx/lb", {"lb_name": "http-lb-v2.default", "lb_list": [{"url": ""}]},
         "Invalid value in json/yaml: lb_list[0].url is required", "lb_list[0].url"),
        ("/nginx/lb", {"lb_list": [{"url": "a:1"}]}, "Invalid value in json/yaml: lb_name is required", "lb_name"),
        ("/nginx/server", {"server_name": "clover-server1", "locations": [{"uri_match": "/x", "status": "abc"}]},
         "Invalid value in json/yaml: locations[0].status must be a whole number, not 'abc'", "locations[0].status"),
        ("/snort/addrule", {"lb_name": "x", "lb_list": [], "lb_group": "g"},
         "Invalid value in json/yaml: the rule spec: unknown field(s) lb_group, lb_list, lb_name; expected content, "
         "dest_ip, dest_port, msg, protocol, rev, rule, sid, src_ip, src_port", "lb_group"),
        ("/snort/addrule", {"protocol": "tcp", "msg": "m"}, "Invalid value in json/yaml: sid is required", "sid"),
        ("/nginx/proxy", {"block_seconds": -3}, "Invalid value in json/yaml: block_seconds must not be negative",
         "block_seconds"),
    ]  # fmt: skip
    for path, body, message, field in cases:
        status, payload = error(client.post(path, json=body))
        assert (status, payload["error"], payload["field"]) == (400, message, field), path


def test_an_unknown_pod_name_is_refused_before_dialling(client: FlaskClient) -> None:
    body = {"lb_name": "http-lb-v9.default", "lb_list": [{"url": "clover-server1:9180"}]}
    status, payload = error(client.post("/nginx/lb", json=body))
    assert (status, payload["field"]) == (400, "lb_name")
    assert payload["error"] == (
        "Invalid value in json/yaml: lb_name: no pod or service named 'http-lb-v9.default' (not in the local pod "
        "registry, and not resolvable)"
    )


def test_a_refused_test_plan_lists_every_problem_with_its_field(client: FlaskClient) -> None:
    plan = {"load_spec": {"num_threads": 0, "loops": 0}, "url_list": [{"name": "a", "url": "gopher://x"}]}
    status, payload = error(client.post("/jmeter/gen", json=plan))
    assert status == 400
    assert [p["field"] for p in payload["problems"]] == ["load_spec.num_threads", "load_spec.duration",
                                                         "url_list[0].url"]  # fmt: skip
    assert payload["error"].startswith("Invalid value in test plan json/yaml: load_spec.num_threads: ")
    status, payload = error(client.post("/jmeter/start", json={"num_slaves": "two"}))
    assert (status, payload["field"]) == (400, "num_slaves")
    assert error(client.get("/jmeter/results/everything")) == (
        400, {"error": "result type 'everything' must be one of log, summary, detail, results, jtl", "field": "r_type",
              "status": 400})  # fmt: skip


def test_unreachable_services_answer_503_with_what_was_dialled(client: FlaskClient, cfg: Config) -> None:
    status, payload = error(client.get("/collector/init"))
    assert (status, payload["error"]) == (
        503, f"Error connecting to the collector at {cfg.collector_grpc} via gRPC: UNAVAILABLE")  # fmt: skip
    status, payload = error(client.get("/visibility/get/all"))
    assert status == 503 and payload["error"].startswith(f"Error connecting to Redis at {cfg.redis_url}: ")
    status, payload = error(client.get("/jmeter/status"))
    assert status == 503 and payload["error"].startswith(
        f"Error connecting to the validation service at {cfg.validation_grpc} via gRPC"
    )
    assert client.get("/health").status_code == 503


def test_unknown_routes_and_methods_answer_json(client: FlaskClient) -> None:
    assert error(client.get("/nope")) == (404, {"error": "no route /nope (see /openapi.json)", "field": None,
                                                "status": 404})  # fmt: skip
    assert error(client.delete("/visibility/set")) == (
        405, {"error": "DELETE is not allowed on /visibility/set", "field": None, "status": 405})  # fmt: skip


def test_with_a_token_configured_mutating_routes_need_it_and_reading_routes_do_not(guarded: FlaskClient) -> None:
    body = {"services": [{"name": "proxy-access-control"}]}
    reply = guarded.post("/visibility/set", json=body)
    assert error(reply)[0] == 401 and reply.headers["WWW-Authenticate"] == "Bearer"
    assert error(reply)[1]["error"] == (
        "this route changes state and needs the API token: send Authorization: Bearer <CLOVER_API_TOKEN>"
    )
    assert error(guarded.post("/visibility/set", json=body, headers={"Authorization": "Bearer nope"}))[1] == {
        "error": "the API token is wrong", "field": None, "status": 403}  # fmt: skip
    for path in ("/collector/init", "/snort/start", "/jmeter/stop", "/upload", "/visibility/clear"):
        assert guarded.get(path).status_code == 401, path
    # With the token the request goes through to the (unreachable) Redis: 503, not 401.
    assert guarded.post("/visibility/set", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 503
    assert guarded.post("/visibility/set", json=body, headers={"X-Clover-Token": "s3cret"}).status_code == 503
    # Reading needs no token.
    assert guarded.get("/visibility/get/all").status_code == 503
    assert guarded.get("/test").status_code == 200


def test_the_openapi_description_lists_every_route_method_body_and_the_token(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").json
    assert doc["openapi"] == "3.1.0"
    for route in ROUTES:
        path = openapi._path(route)
        for method in route.methods:
            op = doc["paths"][path][method.lower()]
            assert ("security" in op) == route.mutating, (method, path)
            if route.body:
                assert op["requestBody"]["content"]["application/json"]["schema"] == {
                    "$ref": f"#/components/schemas/{route.body}"
                }
    assert set(BODIES) <= set(doc["components"]["schemas"])
    assert doc["paths"]["/visibility/get/stats/{s_type}"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ] == {"$ref": "#/components/schemas/Stats"}
    page = client.get("/api/docs")
    assert page.status_code == 200 and "/visibility/get/stats/{s_type}" in page.text


def test_the_documented_sample_chain_examples_pass_the_chains_own_checks() -> None:
    assert sdc_specs.lb_request(LB["example"])[0] == "http-lb-v2.default"
    assert sdc_specs.rule_request(IDS_RULE["example"]).sid == "10000003"
    for schema in (SERVER, PROXY):
        assert schema["additionalProperties"] is False
    assert set(LB["properties"]) == sdc_specs.LB_FIELDS
    assert set(SERVER["properties"]) == sdc_specs.SERVER_FIELDS
    assert set(PROXY["properties"]) == sdc_specs.PROXY_FIELDS
    assert set(IDS_RULE["properties"]) == sdc_specs.RULE_FIELDS


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("Invalid value in json/yaml: lb_list[0].url is required", "lb_list[0].url"),
        ("Invalid value in json/yaml: the lb spec: unknown field(s) colour; expected ...", "colour"),
        ("Invalid value in json/yaml: the rule spec: unknown field(s) lb_group, lb_list", "lb_group"),
        ("Failed to modify nginx config: files[0].src_file '/x' does not exist on clover-server1", "files[0].src_file"),
        ("Failed to add to local rules: sid 1900001 is used by the community rule 'x'", "sid"),
        ("Failed to add to local rules: pcre '\"/(/\"' does not compile", None),
        ("Failed to modify nginx config: slb_list[1] 'x:1' does not resolve", "lb_list[1].url"),
    ],
)
def test_the_field_a_sample_chain_refusal_names_is_found(text: str, field: str | None) -> None:
    schema = {"properties": {**LB["properties"], **SERVER["properties"], **IDS_RULE["properties"]}}
    assert field_in(text, schema) == field


def _dash_call(client: FlaskClient, output_part: str, inputs: dict[str, Any], state: dict[str, Any]) -> Any:
    deps = client.get("/dashboard/_dash-dependencies").json
    callback = next(c for c in deps if output_part in c["output"])

    def items(specs: list[dict[str, Any]], values: dict[str, Any]) -> list[dict[str, Any]]:
        return [{**s, "value": values.get(f"{s['id']}.{s['property']}")} for s in specs]

    specs = [
        dict(zip(("id", "property"), o.split("."), strict=True)) for o in callback["output"].strip(".").split("...")
    ]
    outputs: Any = specs if callback["output"].startswith("..") else specs[0]
    body = {"output": callback["output"], "outputs": outputs, "inputs": items(callback["inputs"], inputs),
            "state": items(callback["state"], state), "changedPropIds": list(inputs)}  # fmt: skip
    return client.post("/dashboard/_dash-update-component", json=body).json


def test_with_a_token_configured_the_dashboard_controls_need_it_too(cfg: Config) -> None:
    client = create_app(replace(cfg, api_token="s3cret")).test_client()
    clicked = {"clear.submit_n_clicks": 1}
    refused = _dash_call(client, "clear-result.children", clicked, {"token.data": None})
    assert refused["response"]["clear-result"]["children"]["props"]["children"] == (
        "Enter the API token (top right) to change anything."
    )
    wrong = _dash_call(client, "clear-result.children", clicked, {"token.data": "guess"})
    assert wrong["response"]["clear-result"]["children"]["props"]["children"].startswith("Enter the API token")
    # With the token the clear goes through to the (unreachable) collector.
    through = _dash_call(client, "clear-result.children", clicked, {"token.data": "s3cret"})
    assert through["response"]["clear-result"]["children"]["props"]["children"] == (
        f"Error connecting to the collector at {cfg.collector_grpc} via gRPC: UNAVAILABLE"
    )
    lb = _dash_call(client, "lb-result.children", {"http-lb-v2-apply.n_clicks": 1},
                    {"http-lb-v1-servers.value": [], "http-lb-v2-servers.value": ["clover-server4:9180"],
                     "token.data": None})  # fmt: skip
    assert lb["response"]["lb-result"]["children"]["props"]["children"].startswith("Enter the API token")
