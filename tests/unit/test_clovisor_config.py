"""Clovisor's Redis settings, port protocols and Kubernetes target selection (no services)."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from clover import keys
from clovisor import settings
from clovisor.discovery.kube import targets_from
from clovisor.settings import EgressRule, LabelFilter
from clovisor.targets import port_protocol, traced_ports


def test_no_labels_means_the_default_namespace() -> None:
    s = settings.build([], {})
    assert s.labels == (LabelFilter("default"),)
    assert s.selects("default", {}) and not s.selects("other", {})


def test_label_filters_select_pods_by_namespace_or_one_label_ored() -> None:
    s = settings.build(["my-2nd-ns:app:web", "my-2nd-ns:app:database", "my-namespace"], {})
    assert s.selects("my-2nd-ns", {"app": "web"}) and s.selects("my-2nd-ns", {"app": "database"})
    assert not s.selects("my-2nd-ns", {"app": "cache"}) and not s.selects("default", {"app": "web"})
    assert s.selects("my-namespace", {}) and s.errors == ()


def test_a_malformed_label_entry_is_reported_and_the_others_kept() -> None:
    s = settings.build(["ns:key", "good"], {})  # the original crashed on "ns:key"
    assert s.labels == (LabelFilter("good"),)
    assert s.errors == ("clovisor_labels entry 'ns:key' must be <namespace> or <namespace>:<key>:<value>",)


def test_both_egress_keys_are_read_and_the_prefix_rule_is_the_documented_one() -> None:
    s = settings.build(
        [],
        {
            keys.CLOVISOR_EGRESS_MATCH: ["10.0.0.1:3456"],
            keys.CLOVISOR_EGRESS_MATCH_ORIGINAL: ["0:3456:proxy", "0:80", "10.0.0.1:3456"],
        },
    )
    assert s.egress == (EgressRule("10.0.0.1", 3456), EgressRule("0", 3456, "proxy"), EgressRule("0", 80))
    assert s.egress_for("proxy-access-control") == list(s.egress)
    assert s.egress_for("http-lb-v1") == [EgressRule("10.0.0.1", 3456), EgressRule("0", 80)]
    assert s.egress_for("my-proxy") == [EgressRule("10.0.0.1", 3456), EgressRule("0", 80)]  # prefix, not substring


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("10.0.0.1", "must be <ip or 0>:<port>[:<pod name prefix>]"),
        ("10.0.0.300:80", "'10.0.0.300' is not an IP address or 0"),
        ("0:99999", "port '99999' is not a TCP port"),
        ("0:http", "port 'http' is not a TCP port"),
    ],
)
def test_bad_egress_entries_name_key_and_entry(entry: str, message: str) -> None:
    s = settings.build([], {keys.CLOVISOR_EGRESS_MATCH_ORIGINAL: [entry, "0:80"]})
    assert s.egress == (EgressRule("0", 80),)
    (error,) = s.errors
    assert error.startswith(f"clovior_egress_match entry {entry!r}") and error.endswith(message)


def test_jaeger_keys_are_honoured_and_checked() -> None:
    s = settings.build([], {}, "jaeger-collector.istio-system:14268", "jaeger-agent.istio-system:6831")
    assert (s.jaeger_collector, s.jaeger_agent) == (
        "jaeger-collector.istio-system:14268",
        "jaeger-agent.istio-system:6831",
    )
    bad = settings.build([], {}, "no-port")
    assert bad.jaeger_collector is None and bad.errors == (
        "clovisor_jaeger_collector='no-port' must look like host:port",
    )


def test_port_protocols_follow_istio_port_names() -> None:
    assert [port_protocol(n) for n in ("http", "http-1234", "HTTP-web", "tcp-db", "grpc", "")] == [
        "http", "http", "http", "tcp", "grpc", None,
    ]  # fmt: skip
    ports = {"http": 80, "http-admin": 8080, "tcp-db": 5432, "foo-bar": 9000, "udp-dns": 53}
    assert traced_ports(ports, frozenset()) == {80: "http", 8080: "http", 5432: "tcp"}
    assert traced_ports(ports, frozenset({"foo"})) == {80: "http", 8080: "http", 5432: "tcp", 9000: "foo"}


def _pod(name: str, ns: str, labels: dict[str, str], node: str = "n1", ip: str = "10.1.0.5", ports=((8080, "web"),)):  # type: ignore[no-untyped-def]
    return NS(
        metadata=NS(name=name, namespace=ns, labels=labels, deletion_timestamp=None),
        spec=NS(
            node_name=node, host_network=False, containers=[NS(ports=[NS(container_port=p, name=n) for p, n in ports])]
        ),
        status=NS(phase="Running", pod_ip=ip),
    )


def _svc(name: str, ns: str, selector: dict[str, str], ports: list[tuple[str, int, object]]):  # type: ignore[no-untyped-def]
    return NS(
        metadata=NS(name=name, namespace=ns),
        spec=NS(selector=selector, ports=[NS(name=n, port=p, target_port=t, protocol="TCP") for n, p, t in ports]),
    )


def test_kubernetes_targets_use_this_nodes_selected_pods_and_service_port_names() -> None:
    pods = [
        _pod("web-1", "default", {"app": "web"}),
        _pod("web-2", "default", {"app": "web"}, node="n2", ip="10.1.0.6"),
        _pod("db-1", "default", {"app": "db"}, ip="10.1.0.7", ports=((5432, None),)),
        _pod("x-1", "other", {"app": "web"}, ip="10.1.0.8"),
    ]
    services = [
        _svc("web", "default", {"app": "web"}, [("http", 80, "web"), ("metrics", 9090, 9090)]),
        _svc("db", "default", {"app": "db"}, [("tcp-postgres", 5432, 5432)]),
        _svc("kubernetes", "default", {}, [("https", 443, 6443)]),
    ]
    veths = {"10.1.0.5": "veth-web1", "10.1.0.7": "veth-db1", "10.1.0.8": "veth-x1"}
    found = targets_from(pods, services, settings.build([], {}), "n1", frozenset(), veths.get)
    assert [(t.name, t.service, t.host_veth, dict(t.ports)) for t in found] == [
        ("web-1", "web", "veth-web1", {8080: "http"}),
        ("db-1", "db", "veth-db1", {5432: "tcp"}),
    ]
    only_web = targets_from(
        pods, services, settings.build(["default:app:web", "other"], {}), "n1", frozenset(), veths.get
    )
    assert [t.name for t in only_web] == ["web-1"]  # x-1 has no service in "other": nothing to trace


def test_a_negative_span_budget_is_refused_naming_it() -> None:
    from click.testing import CliRunner

    from clovisor.cli import main
    from clovisor.datapath import Limits

    with pytest.raises(ValueError, match="spans_per_second=-1"):
        Limits(spans_per_second=-1).validate()
    Limits(spans_per_second=0).validate()  # 0: no limit
    result = CliRunner().invoke(main, ["run", "--max-spans-per-second", "-1"])
    assert result.exit_code == 2 and "--max-spans-per-second" in result.output
