"""Pod metrics: Envoy's names through Istio's statsd bridge, the exposition format, and the
names the original set_visibility.yaml tracks."""

from __future__ import annotations

from pathlib import Path

import yaml

from sdc.metrics import Registry, cluster_name, envoy_metric

YAML = Path(__file__).resolve().parents[2] / "cloverctl" / "yaml" / "set_visibility.yaml"


def test_names_follow_the_statsd_bridge() -> None:
    cluster = cluster_name("outbound", 9180, "proxy-access-control.default.svc.cluster.local")
    assert cluster == "outbound|9180||proxy-access-control.default.svc.cluster.local"
    assert envoy_metric(cluster, "upstream_rq_2xx") == (
        "envoy_cluster_outbound_9180__proxy_access_control_default_svc_cluster_local_upstream_rq_2xx"
    )


def test_every_set_visibility_name_is_a_cluster_stat_the_chain_exposes() -> None:
    body = yaml.safe_load(YAML.read_text())
    registry = Registry()
    for service in ("proxy-access-control", "clover-server1", "clover-server2", "clover-server3"):
        for direction in ("inbound", "outbound"):
            registry.cluster(direction, 9180, f"{service}.default.svc.cluster.local")
    exposed = registry.render()
    wanted = [
        p["prefix"] + s["name"] + x["suffix"]
        for s in body["services"]
        for p in body["metric_prefixes"]
        for x in body["metric_suffixes"]
    ]
    assert len(wanted) == 16
    for name in wanted:
        assert f"\n{name} 0\n" in exposed


def test_requests_and_connections_are_counted_exactly() -> None:
    registry = Registry()
    stats = registry.cluster("inbound", 9180, "clover-server1.default.svc.cluster.local")
    stats.connection_opened()
    for status, ms in ((200, 0.7), (200, 3.0), (404, 30.0), (503, 700.0)):
        stats.request_started()
        stats.request_finished(status, ms, rx_bytes=100, tx_bytes=1000)
    stats.request_started()
    prefix = "envoy_cluster_inbound_9180__clover_server1_default_svc_cluster_local_"
    text = registry.render()
    for line in (
        f"{prefix}upstream_rq_total 4",
        f"{prefix}upstream_rq_2xx 2",
        f"{prefix}upstream_rq_4xx 1",
        f"{prefix}upstream_rq_5xx 1",
        f"{prefix}upstream_rq_active 1",
        f"{prefix}upstream_cx_total 1",
        f"{prefix}upstream_cx_active 1",
        f"{prefix}upstream_cx_rx_bytes_total 400",
        f"{prefix}upstream_cx_tx_bytes_total 4000",
        f'{prefix}upstream_rq_time_bucket{{le="1"}} 1',
        f'{prefix}upstream_rq_time_bucket{{le="5"}} 2',
        f'{prefix}upstream_rq_time_bucket{{le="50"}} 3',
        f'{prefix}upstream_rq_time_bucket{{le="1000"}} 4',
        f'{prefix}upstream_rq_time_bucket{{le="+Inf"}} 4',
        f"{prefix}upstream_rq_time_sum 733.7",
        f"{prefix}upstream_rq_time_count 4",
        f"# TYPE {prefix}upstream_rq_2xx counter",
        f"# TYPE {prefix}upstream_cx_active gauge",
        f"# TYPE {prefix}upstream_rq_time histogram",
    ):
        assert line + "\n" in text, line
    assert registry.value(f"{prefix}upstream_rq_2xx") == 2


def test_pod_metrics_have_help_and_type() -> None:
    registry = Registry()
    registry.inc("clover_sdc_proxy_blocked_requests_total", help="Requests refused with 403")
    registry.inc("clover_sdc_proxy_blocked_requests_total")
    registry.set("clover_sdc_lb_servers", 3, "Servers in the list")
    text = registry.render()
    assert "# HELP clover_sdc_proxy_blocked_requests_total Requests refused with 403\n" in text
    assert "# TYPE clover_sdc_proxy_blocked_requests_total counter\nclover_sdc_proxy_blocked_requests_total 2\n" in text
    assert "# TYPE clover_sdc_lb_servers gauge\nclover_sdc_lb_servers 3\n" in text
