"""A ``TestPlan`` as a JMeter JMX document (the XML JMeter 5.6 saves).

One thread group (``load_spec``), one HTTP sampler per ``url_list`` entry (testname = the
entry's name, which becomes the label in the results) with its own header manager. The XML
is built with ElementTree, so names, urls, headers and bodies are escaped properly.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

from validation.plan import Request, TestPlan

JMETER_VERSION = "5.6.3"

Resolver = Callable[[str], str]


def literal(text: str) -> str:
    """``text`` written so that JMeter sends it unchanged.

    JMeter evaluates ``${...}`` in every string (variables, and functions such as
    ``${__groovy(...)}``), and in a string that holds a function it reads ``\\`` as an escape.
    A plan's strings are data: when one contains ``${``, each ``$`` becomes the function
    ``${__char(36)}`` (which yields ``$``) and each backslash is doubled."""
    if "${" not in text:
        return text
    return text.replace("\\", "\\\\").replace("$", "${__char(36)}")


def _prop(parent: ET.Element, kind: str, name: str, value: object) -> ET.Element:
    el = ET.SubElement(parent, kind, name=name)
    el.text = str(value).lower() if isinstance(value, bool) else literal(str(value))
    return el


def _string(parent: ET.Element, name: str, value: object) -> None:
    _prop(parent, "stringProp", name, value)


def _bool(parent: ET.Element, name: str, value: bool) -> None:
    _prop(parent, "boolProp", name, value)


def _element(parent: ET.Element, tag: str, gui: str, test: str, name: str) -> ET.Element:
    return ET.SubElement(parent, tag, guiclass=gui, testclass=test, testname=name)


def _arguments(parent: ET.Element, name: str, gui: str, title: str) -> ET.Element:
    args = ET.SubElement(
        parent, "elementProp", name=name, elementType="Arguments", guiclass=gui, testclass="Arguments", testname=title
    )
    return ET.SubElement(args, "collectionProp", name="Arguments.arguments")


def _thread_group(tree: ET.Element, plan: TestPlan) -> None:
    load = plan.load
    group = _element(tree, "ThreadGroup", "ThreadGroupGui", "ThreadGroup", "ThreadGroup")
    _string(group, "ThreadGroup.on_sample_error", "continue")
    loop = ET.SubElement(
        group,
        "elementProp",
        name="ThreadGroup.main_controller",
        elementType="LoopController",
        guiclass="LoopControlPanel",
        testclass="LoopController",
        testname="Loop Controller",
    )
    _bool(loop, "LoopController.continue_forever", False)
    _string(loop, "LoopController.loops", -1 if load.forever else load.loops)
    _string(group, "ThreadGroup.num_threads", load.num_threads)
    _string(group, "ThreadGroup.ramp_time", load.ramp_time)
    _bool(group, "ThreadGroup.delayedStart", True)
    _bool(group, "ThreadGroup.scheduler", load.duration > 0)
    _string(group, "ThreadGroup.duration", load.duration if load.duration > 0 else "")
    _string(group, "ThreadGroup.delay", "")
    _bool(group, "ThreadGroup.same_user_on_next_iteration", True)


def _sampler(tree: ET.Element, request: Request, resolve: Resolver | None) -> None:
    sampler = _element(tree, "HTTPSamplerProxy", "HttpTestSampleGui", "HTTPSamplerProxy", literal(request.name))
    if request.body is not None:
        _bool(sampler, "HTTPSampler.postBodyRaw", True)
        args = _arguments(sampler, "HTTPsampler.Arguments", "HTTPArgumentsPanel", "User Defined Variables")
        arg = ET.SubElement(args, "elementProp", name="", elementType="HTTPArgument")
        _bool(arg, "HTTPArgument.always_encode", False)
        _string(arg, "Argument.value", request.body)
        _string(arg, "Argument.metadata", "=")
    else:
        _arguments(sampler, "HTTPsampler.Arguments", "HTTPArgumentsPanel", "User Defined Variables")
    host = resolve(request.host) if resolve is not None else request.host
    _string(sampler, "HTTPSampler.domain", host)
    _string(sampler, "HTTPSampler.port", request.port)
    _string(sampler, "HTTPSampler.protocol", request.protocol)
    _string(sampler, "HTTPSampler.contentEncoding", "UTF-8" if request.body is not None else "")
    _string(sampler, "HTTPSampler.path", request.path)
    _string(sampler, "HTTPSampler.method", request.method)
    _bool(sampler, "HTTPSampler.follow_redirects", True)
    _bool(sampler, "HTTPSampler.auto_redirects", False)
    _bool(sampler, "HTTPSampler.use_keepalive", True)
    _bool(sampler, "HTTPSampler.DO_MULTIPART_POST", False)
    _string(sampler, "HTTPSampler.implementation", "HttpClient4")
    children = ET.SubElement(tree, "hashTree")
    headers = list(request.headers)
    if request.user_agent is not None:
        headers.insert(0, ("User-Agent", request.user_agent))
    if host != request.host and not any(name.lower() == "host" for name, _ in headers):
        # Resolved locally (the pod registry plays the cluster's DNS): keep the name in Host.
        default_port = 443 if request.protocol == "https" else 80
        headers.append(("Host", request.host if request.port == default_port else f"{request.host}:{request.port}"))
    if headers:
        manager = _element(children, "HeaderManager", "HeaderPanel", "HeaderManager", "HTTP Header Manager")
        collection = ET.SubElement(manager, "collectionProp", name="HeaderManager.headers")
        for name, value in headers:
            header = ET.SubElement(collection, "elementProp", name="", elementType="Header")
            _string(header, "Header.name", name)
            _string(header, "Header.value", value)
        ET.SubElement(children, "hashTree")


def render_jmx(plan: TestPlan, resolve: Resolver | None = None) -> str:
    """The JMX text of ``plan``. ``resolve`` maps a url's host to the address to connect to
    (the local pod registry standing in for cluster DNS); the Host header keeps the name."""
    root = ET.Element("jmeterTestPlan", version="1.2", properties="5.0", jmeter=JMETER_VERSION)
    top = ET.SubElement(root, "hashTree")
    test_plan = _element(top, "TestPlan", "TestPlanGui", "TestPlan", f"Clover {plan.name}")
    _bool(test_plan, "TestPlan.functional_mode", False)
    _bool(test_plan, "TestPlan.serialize_threadgroups", False)
    _bool(test_plan, "TestPlan.tearDown_on_shutdown", True)
    _arguments(test_plan, "TestPlan.user_defined_variables", "ArgumentsPanel", "User Defined Variables")
    plan_tree = ET.SubElement(top, "hashTree")
    _thread_group(plan_tree, plan)
    group_tree = ET.SubElement(plan_tree, "hashTree")
    for request in plan.requests:
        _sampler(group_tree, request, resolve)
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
