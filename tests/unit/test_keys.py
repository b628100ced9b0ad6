"""The Redis key contract keeps the original names (docs/compatibility.md §3)."""

from __future__ import annotations

from clover import keys


def test_service_name_forms() -> None:
    assert keys.underscore("proxy-access-control") == "proxy_access_control"
    assert keys.hyphen("proxy_access_control") == "proxy-access-control"
    assert keys.service_stats("clover_server1") == "clover-server1"


def test_metric_keys_follow_prefix_service_suffix() -> None:
    name = keys.metric_value(
        "envoy_cluster_outbound_9180__", "proxy-access-control", "_default_svc_cluster_local_upstream_rq_2xx"
    )
    assert name == "envoy_cluster_outbound_9180__proxy_access_control_default_svc_cluster_local_upstream_rq_2xx"
    assert keys.metric_history("p_", "svc", "_s") == "metrics_p_svc_s"


def test_zset_members_and_patterned_keys() -> None:
    assert keys.status_url_member("200", "/index.html") == "200, /index.html"
    assert keys.node_url_member("proxy-access-control", "/") == "proxy-access-control, /"
    assert keys.snort_event(17) == "snort_event:17"
    assert keys.legacy_span_tags("s1", "t1") == "tags:s1:t1"
    assert keys.legacy_span("t1", "s1") == "spans:t1:s1"


def test_clear_list_is_the_originals() -> None:
    assert set(keys.CLEARED_SETS_AND_ZSETS) == set(keys.SPAN_SETS) | set(keys.SPAN_ZSETS)
    assert keys.CLOVISOR_EGRESS_MATCH_ORIGINAL == "clovior_egress_match"
