"""Request bodies (the sample yaml files, the controller's JSON) become gRPC messages; bad ones
are refused naming the field, before anything is sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sdc import specs
from sdc.ids.rules import build_rule, compile_rule, load_classifications

YAML_DIR = Path(__file__).resolve().parents[2] / "cloverctl" / "yaml"


def load(name: str) -> Any:
    return yaml.safe_load((YAML_DIR / name).read_text())


def test_lbv2_yaml_points_http_lb_v2_at_servers_4_and_5() -> None:
    target, request = specs.lb_request(load("lbv2.yaml"))
    assert target == "http-lb-v2.default"
    assert list(request.slb_list) == ["clover-server4:9180", "clover-server5:9180"]
    assert (request.server_port, request.server_name, request.slb_group, request.lb_path) == (
        "9180", "http-lb-v2", "cloverlb", "/",
    )  # fmt: skip


def test_lbv1_yaml_lists_servers_1_to_3() -> None:
    target, request = specs.lb_request(load("lbv1.yaml"))
    assert target == "http-lb-v1.default"
    assert list(request.slb_list) == [f"clover-server{i}:9180" for i in (1, 2, 3)]


def test_server_yaml_keeps_the_original_fields_with_an_absolute_destination() -> None:
    target, request = specs.server_request(load("server.yaml"))
    assert target == "clover-server1"
    assert [(loc.uri_match, loc.directive, loc.path) for loc in request.locations] == [
        ("/clover/testurl", "try_files $uri @default2", "/clover/testurl"),
        ("/test", "try_files $uri @default1", "/test"),
    ]
    assert [(f.src_file, f.dest_file) for f in request.files] == [
        ("/var/www/html/upload/0000000001", "/var/www/html/clover/testurl/file1.png")
    ]
    assert (request.site_root, request.site_index, request.upload_path_config, request.upload_path_test) == (
        "/var/www/html", "index.html", "/upload", "/upload_test",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("idsrule_icmp.yaml", 'alert icmp any any -> $HOME_NET any (msg:"icmp_test"; sid:10000001; rev:001;)'),
        ("idsrule_tcp.yaml", 'alert tcp any any -> $HOME_NET any (msg:"test"; sid:10000002; rev:001;)'),
        (
            "idsrule_scan.yaml",
            'alert tcp any any -> $HOME_NET any (msg:"MALWARE-CNC User-Agent ASafaWeb Scan"; '
            'content:"asafaweb.com"; sid:10000003; rev:001;)',
        ),
    ],
)
def test_the_ids_rule_files_become_valid_snort_rules(name: str, text: str) -> None:
    request = specs.rule_request(load(name))
    fields = {f.name: getattr(request, f.name) for f in request.DESCRIPTOR.fields}
    assert build_rule(fields) == text
    compile_rule(text, load_classifications())


def test_set_visibility_yaml_names_the_chain_services_and_envoy_affixes() -> None:
    body = load("set_visibility.yaml")
    assert [s["name"] for s in body["services"]] == [
        "proxy_access_control", "clover_server1", "clover_server2", "clover_server3",
    ]  # fmt: skip
    assert [p["prefix"] for p in body["metric_prefixes"]] == ["envoy_cluster_outbound_9180__",
                                                            "envoy_cluster_inbound_9180__"]  # fmt: skip


def test_numbers_are_accepted_for_string_fields() -> None:
    _, request = specs.lb_request({"lb_name": "http-lb-v1", "server_port": 9180, "lb_list": [{"url": "a:1"}]})
    assert request.server_port == "9180"
    _, server = specs.server_request(
        {
            "server_name": "clover-server2",
            "locations": [{"uri_match": "/big", "response_size": "4096", "latency_ms": 2.5}],
        }
    )
    assert (server.locations[0].response_size, server.locations[0].latency_ms) == (4096, 2.5)


@pytest.mark.parametrize(
    ("parse", "body", "message"),
    [
        (specs.lb_request, {"lb_name": "http-lb-v2", "lb_list": []}, "lb_list must name at least one server"),
        (specs.lb_request, {"lb_list": [{"url": "a:1"}]}, "lb_name is required"),
        (specs.lb_request, {"lb_name": "x", "lb_list": [{"uri": "a:1"}]}, "lb_list[0]: unknown field(s) uri"),
        (specs.lb_request, {"lb_name": "x", "lb_list": "a:1"}, "lb_list must be a list, not str"),
        (specs.lb_request, {"lb_name": "x", "lb_lst": []}, "unknown field(s) lb_lst"),
        (specs.lb_request, ["not", "a", "mapping"], "the lb spec must be a mapping"),
        (specs.server_request, {"server_name": "s", "locations": [{"directive": "x"}]}, "locations[0].uri_match is"),
        (specs.server_request, {"server_name": "s", "files": [{"src_file": "/a"}]}, "files[0].dest_file is required"),
        (
            specs.server_request,
            {"server_name": "s", "locations": [{"uri_match": "/a", "latency_ms": "slow"}]},
            "locations[0].latency_ms must be a number, not 'slow'",
        ),
        (
            specs.server_request,
            {"server_name": "s", "locations": [{"uri_match": "/a", "response_size": -1}]},
            "locations[0].response_size must not be negative",
        ),
        (specs.proxy_request, {"block_seconds": True}, "block_seconds must be a number, not a boolean"),
        (specs.proxy_request, {"block_seconds": 2**31}, "block_seconds must be at most 2147483647, not 2147483648"),
        (
            specs.server_request,
            {"server_name": "s", "locations": [{"uri_match": "/a", "status": "4294967296"}]},
            "locations[0].status must be at most 2147483647, not '4294967296'",
        ),
        (
            specs.server_request,
            {"server_name": "s", "locations": [{"uri_match": "/a", "latency_ms": float("inf")}]},
            "locations[0].latency_ms must be a finite number, not inf",
        ),
        (
            specs.server_request,
            {"server_name": "s", "locations": [{"uri_match": "/a", "latency_ms": 10**400}]},
            "locations[0].latency_ms must be a number, not 1" + "0" * 56 + "...",
        ),
        (specs.rule_request, {"protocol": "tcp", "msg": "m"}, "sid is required"),
        (specs.rule_request, {"rule": "alert ...", "sid": "5"}, "do not combine it with sid"),
        (specs.rule_request, {"protocol": "tcp", "msg": "m", "sid": "5", "contents": "x"}, "unknown field(s) contents"),
    ],
)
def test_bad_bodies_are_refused_naming_the_field(parse: Any, body: Any, message: str) -> None:
    with pytest.raises(specs.SpecError) as err:
        parse(body)
    assert message in str(err.value)
