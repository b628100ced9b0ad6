"""Collector settings from requests and yaml, and the tracked metric names."""

from __future__ import annotations

import pytest

from clover.config import Config
from collector.metrics import tracked_metrics
from collector.server import InvalidRequest, settings_from
from protos import collector_pb2

CFG = Config.from_env({})


def test_empty_request_takes_the_configured_endpoints() -> None:
    s = settings_from(collector_pb2.ConfigCollector(), CFG)
    assert (s.backend, s.trace_url, s.prometheus_url, s.interval_s) == (
        "jaeger",
        "http://127.0.0.1:16686",
        "http://127.0.0.1:9090",
        5.0,
    )


def test_request_fields_override_the_defaults() -> None:
    request = collector_pb2.ConfigCollector(
        t_host="tracing.istio-system", t_port=80, m_host="prometheus", m_port=9090, sinterval=2, t_backend="zipkin"
    )
    s = settings_from(request, CFG)
    assert (s.backend, s.trace_url, s.prometheus_url, s.interval_s) == (
        "zipkin",
        "http://tracing.istio-system:80",
        "http://prometheus:9090",
        2.0,
    )


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"t_backend": "tempo"}, "t_backend 'tempo' must be jaeger or zipkin"),
        ({"t_host": "jaeger"}, "t_host and t_port must be given together"),
        ({"m_port": 70000, "m_host": "p"}, "m_port 70000 is outside 1..65535"),
        ({"sinterval": -1}, "sinterval -1.0 must be positive"),
    ],
)
def test_a_bad_request_field_is_named(request_fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        settings_from(collector_pb2.ConfigCollector(**request_fields), CFG)  # type: ignore[arg-type]
    assert str(err.value) == message


def test_tracked_metric_names_are_prefix_service_suffix_then_custom() -> None:
    names = tracked_metrics(
        ["proxy_access_control"],
        ["envoy_cluster_outbound_9180__", "envoy_cluster_inbound_9180__"],
        ["_default_svc_cluster_local_upstream_rq_2xx"],
        ["envoy_tracing_zipkin_spans_sent"],
    )
    assert [(m.name, m.service) for m in names] == [
        ("envoy_cluster_inbound_9180__proxy_access_control_default_svc_cluster_local_upstream_rq_2xx",
         "proxy_access_control"),
        ("envoy_cluster_outbound_9180__proxy_access_control_default_svc_cluster_local_upstream_rq_2xx",
         "proxy_access_control"),
        ("envoy_tracing_zipkin_spans_sent", ""),
    ]  # fmt: skip
