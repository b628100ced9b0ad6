"""TestPlan -> JMX: the original mapping (docs/compatibility.md §8b), the additions, literal strings."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from clover.config import CHECKOUT_DIR
from validation.jmx import literal, render_jmx
from validation.plan import load_plan_file, parse_plan

GUIDE_YAML = CHECKOUT_DIR / "cloverctl" / "yaml" / "jmeter_testplan.yaml"


def props(element: ET.Element) -> dict[str, str]:
    """The element's direct stringProp/boolProp children, name -> text."""
    return {p.attrib["name"]: p.text or "" for p in element if p.tag in ("stringProp", "boolProp")}


def samplers(root: ET.Element) -> list[ET.Element]:
    return root.findall(".//HTTPSamplerProxy")


def headers_of(root: ET.Element, index: int) -> list[tuple[str, str]]:
    """The headers of the index-th sampler's header manager (the hashTree after the sampler)."""
    group_tree = root.find("./hashTree/hashTree/hashTree")
    assert group_tree is not None
    children = list(group_tree)
    sampler_tree = children[children.index(samplers(root)[index]) + 1]
    return [
        (props(h)["Header.name"], props(h)["Header.value"])
        for h in sampler_tree.findall("./HeaderManager/collectionProp/elementProp")
    ]


def test_the_guide_plan_maps_to_one_thread_group_and_a_sampler_per_url() -> None:
    root = ET.fromstring(render_jmx(load_plan_file(GUIDE_YAML)))
    assert (root.tag, root.attrib["jmeter"]) == ("jmeterTestPlan", "5.6.3")
    group = root.find(".//ThreadGroup")
    assert group is not None
    assert props(group) == {
        "ThreadGroup.on_sample_error": "continue",
        "ThreadGroup.num_threads": "5",
        "ThreadGroup.ramp_time": "60",
        "ThreadGroup.delayedStart": "true",
        "ThreadGroup.scheduler": "true",
        "ThreadGroup.duration": "80",
        "ThreadGroup.delay": "",
        "ThreadGroup.same_user_on_next_iteration": "true",
    }
    loop = group.find("./elementProp[@name='ThreadGroup.main_controller']")
    assert loop is not None
    assert props(loop) == {"LoopController.continue_forever": "false", "LoopController.loops": "2"}
    assert [s.attrib["testname"] for s in samplers(root)] == ["url1", "url2"]
    for sampler in samplers(root):
        assert props(sampler) == {
            "HTTPSampler.domain": "proxy-access-control.default",
            "HTTPSampler.port": "9180",
            "HTTPSampler.protocol": "http",
            "HTTPSampler.contentEncoding": "",
            "HTTPSampler.path": "/",
            "HTTPSampler.method": "GET",
            "HTTPSampler.follow_redirects": "true",
            "HTTPSampler.auto_redirects": "false",
            "HTTPSampler.use_keepalive": "true",
            "HTTPSampler.DO_MULTIPART_POST": "false",
            "HTTPSampler.implementation": "HttpClient4",
        }
    assert headers_of(root, 0) == [("User-Agent", "chrome")]
    assert headers_of(root, 1) == [("User-Agent", "safari")]


def plan(entry: dict[str, Any], **load: Any) -> ET.Element:
    data = {"load_spec": {"num_threads": 1, **load}, "url_list": [{"name": "u", **entry}]}
    return ET.fromstring(render_jmx(parse_plan(data)))


def test_loop_forever_and_no_duration() -> None:
    forever = plan({"url": "h"}, loops=0, duration=7)
    loop = forever.find(".//elementProp[@name='ThreadGroup.main_controller']")
    assert loop is not None
    assert props(loop)["LoopController.loops"] == "-1"
    group = forever.find(".//ThreadGroup")
    assert group is not None
    assert (props(group)["ThreadGroup.scheduler"], props(group)["ThreadGroup.duration"]) == ("true", "7")
    unbounded = plan({"url": "h"}, loops=3).find(".//ThreadGroup")
    assert unbounded is not None
    assert (props(unbounded)["ThreadGroup.scheduler"], props(unbounded)["ThreadGroup.duration"]) == ("false", "")


def test_https_query_headers_and_body() -> None:
    root = plan(
        {
            "url": "https://api.example.com:8443/v1/items?limit=5&sort=-id",
            "method": "POST",
            "user-agent": "curl/8",
            "headers": {"Content-Type": "application/json", "X-Tenant": "a&b<c>"},
            "body": '{"name": "x & <y>"}',
        }
    )
    sampler = samplers(root)[0]
    p = props(sampler)
    assert (p["HTTPSampler.protocol"], p["HTTPSampler.domain"], p["HTTPSampler.port"]) == (
        "https",
        "api.example.com",
        "8443",
    )
    assert (p["HTTPSampler.path"], p["HTTPSampler.method"]) == ("/v1/items?limit=5&sort=-id", "POST")
    assert (p["HTTPSampler.postBodyRaw"], p["HTTPSampler.contentEncoding"]) == ("true", "UTF-8")
    args = sampler.findall("./elementProp[@name='HTTPsampler.Arguments']/collectionProp/elementProp")
    assert [props(a) for a in args] == [
        {"HTTPArgument.always_encode": "false", "Argument.value": '{"name": "x & <y>"}', "Argument.metadata": "="}
    ]
    assert headers_of(root, 0) == [
        ("User-Agent", "curl/8"),
        ("Content-Type", "application/json"),
        ("X-Tenant", "a&b<c>"),
    ]


def test_no_user_agent_no_headers_means_no_header_manager() -> None:
    root = plan({"url": "h"})
    assert root.find(".//HeaderManager") is None


def test_strings_with_jmeter_expressions_are_sent_literally() -> None:
    assert literal("plain $x \\n") == "plain $x \\n"
    assert literal("${__groovy(1)} a\\,b $z") == "${__char(36)}{__groovy(1)} a\\\\,b ${__char(36)}z"
    root = plan({"name": "n ${x}", "url": "h", "method": "PUT", "user-agent": "ua ${__threadNum}", "body": "${y}"})
    assert samplers(root)[0].attrib["testname"] == "n ${__char(36)}{x}"
    assert headers_of(root, 0) == [("User-Agent", "ua ${__char(36)}{__threadNum}")]


def test_a_resolved_host_is_dialled_by_address_and_keeps_its_name_in_host() -> None:
    data = {
        "load_spec": {"num_threads": 1},
        "url_list": [
            {"name": "a", "url": "http://proxy-access-control.default:9180/x"},
            {"name": "b", "url": "http://other:80/"},
            {"name": "c", "url": "http://10.1.1.1:80/"},
        ],
    }
    addresses = {"proxy-access-control.default": "127.177.0.2", "other": "127.177.0.3"}
    root = ET.fromstring(render_jmx(parse_plan(data), resolve=lambda h: addresses.get(h, h)))
    assert [props(s)["HTTPSampler.domain"] for s in samplers(root)] == ["127.177.0.2", "127.177.0.3", "10.1.1.1"]
    assert headers_of(root, 0) == [("Host", "proxy-access-control.default:9180")]
    assert headers_of(root, 1) == [("Host", "other")]
    assert headers_of(root, 2) == []
