"""The Redis key contract: every key any part of Clover reads or writes.

Names, types and meanings follow the original OPNFV Clover (docs/compatibility.md §3); CI scripts and the
dashboard read them, so they never change. Keys that Clover adds are declared here too.
Service names come in two forms: underscore (``proxy_access_control``, "svc_u") and hyphen
(``proxy-access-control``, "svc_h").
"""

from __future__ import annotations


def underscore(service: str) -> str:
    """``proxy-access-control`` -> ``proxy_access_control`` (the form tracked services use)."""
    return service.replace("-", "_")


def hyphen(service: str) -> str:
    """``proxy_access_control`` -> ``proxy-access-control`` (the trace backend's form)."""
    return service.replace("_", "-")


# 3a. Visibility configuration (sets)
VISIBILITY_SERVICES = "visibility_services"
TRACING_SERVICES = "tracing_services"
METRIC_PREFIXES = "metric_prefixes"
METRIC_SUFFIXES = "metric_suffixes"
CUSTOM_METRICS = "custom_metrics"

# Defaults the original kept in RedisOps.init_services/init_metrics (docs/compatibility.md §2a).
DEFAULT_SERVICES = ("http_lb", "proxy_access_control")
DEFAULT_METRIC_PREFIXES = ("envoy_cluster_outbound_", "envoy_cluster_inbound_")
DEFAULT_METRIC_SUFFIXES = (
    "_default_svc_cluster_local_upstream_rq_2xx",
    "_default_svc_cluster_local_upstream_cx_active",
)


# Collector state (new): hash service (hyphen form) -> microseconds up to which its spans were
# fetched, so a restarted collector resumes where it stopped.
COLLECTOR_WATERMARKS = "collector_watermarks"
# Collector state (new): sorted set "<trace id>/<span id>" -> start (microseconds) of the spans
# Kafka acknowledged that a cycle may still read again, so a restarted collector repeats none.
COLLECTOR_SENT_SPANS = "collector_sent_spans"


# 3b. Collector outputs (string: latest sample value)
def metric_value(prefix: str, service: str, suffix: str) -> str:
    """The Prometheus metric name ``<prefix><svc_u><suffix>``, also the key of its latest value."""
    return f"{prefix}{underscore(service)}{suffix}"


# 3c. Spark outputs, system counts (strings holding integers)
SPAN_COUNT = "span_count"
TRACE_COUNT = "trace_count"
METRIC_COUNT = "metric_count"
SYSTEM_COUNTS = (TRACE_COUNT, SPAN_COUNT, METRIC_COUNT)


# 3d. Spark outputs, tracing analysis
def _of_source(key: str, source: str | None) -> str:
    return key if source is None else f"{key}:source:{source}"


def service_stats(service: str, source: str | None = None) -> str:
    """Hash of one service's figures (the original's ``min_rt``, ``avg_rt``, ``max_rt`` and those of
    clover/figures.py), hyphen form: as the source that saw most of its requests measured them,
    or, with ``source``, as that source did (``<service>:source:clovisor``)."""
    return _of_source(hyphen(service), source)


def service_urls(service: str) -> str:
    """Hash of the original's disabled per-service URL path (``node_id``, ``url_count``, ...)."""
    return underscore(service)


RT_MIN = "min_rt"
RT_AVG = "avg_rt"
RT_MAX = "max_rt"
RT_FIELDS = (RT_MIN, RT_AVG, RT_MAX)
NOT_AVAILABLE = "NA"

# The other fields of the service hash (percentiles, counts, error and request rates, the source
# they were measured at) are declared with their formats in clover/figures.py.


def service_window(service: str, source: str | None = None) -> str:
    """Hash of a service's figures over the sliding window (the same fields as its hash)."""
    return _of_source(f"{hyphen(service)}:window", source)


def url_stats(service: str, source: str | None = None) -> str:
    """Hash: URL (path and query) -> JSON of the service's figures for that URL, whole retention."""
    return _of_source(f"{hyphen(service)}:urls", source)


def url_window_stats(service: str, source: str | None = None) -> str:
    """Hash: URL (path and query) -> JSON of the service's figures for that URL, sliding window."""
    return _of_source(f"{hyphen(service)}:window:urls", source)


# The analytics' bookkeeping: whether it runs (set by the collector's Start/StopCollector),
# which derived keys it published last (so a clear or an untracked service removes them all),
# and the prefix of the temporary keys of a publication in progress.
ANALYTICS_ENABLED = "visibility_analytics_enabled"
# Held by an analytics run and by a clear (clover/lease.py), so the two never interleave; a clear
# sets the request flag so a run in progress gives the lease up at its next step.
VISIBILITY_LEASE = "visibility_lease"
VISIBILITY_CLEAR_REQUESTED = "visibility_clear_requested"
PUBLISHED_KEYS = "visibility_published_keys"
PUBLISH_TMP_PREFIX = "visibility_tmp:"

SPAN_URLS = "span_urls"
SPAN_URLS_Z = "span_urls_z"
SPAN_USER_AGENT = "span_user_agent"
SPAN_USER_AGENT_Z = "span_user_agent_z"
SPAN_NODE_ID = "span_node_id"
SPAN_NODE_ID_Z = "span_node_id_z"
SPAN_STATUS_CODES_Z = "span_status_codes_z"
SPAN_NODE_URL_Z = "span_node_url_z"
SPAN_OPERATION_NAME = "span_operation_name"
SPAN_UPSTREAM_CLUSTER = "span_upstream_cluster"
SPAN_STATUS_CODE = "span_status_code"

SPAN_SETS = (
    SPAN_URLS,
    SPAN_USER_AGENT,
    SPAN_NODE_ID,
    SPAN_OPERATION_NAME,
    SPAN_UPSTREAM_CLUSTER,
    SPAN_STATUS_CODE,
)
SPAN_ZSETS = (SPAN_URLS_Z, SPAN_USER_AGENT_Z, SPAN_NODE_ID_Z, SPAN_STATUS_CODES_Z, SPAN_NODE_URL_Z)

METRICS_HISTORY_PREFIX = "metrics_"
METRICS_HISTORY_LENGTH = 100


def metric_history(prefix: str, service: str, suffix: str) -> str:
    """List of the last 100 values of a tracked metric, oldest first."""
    return METRICS_HISTORY_PREFIX + metric_value(prefix, service, suffix)


# The graph (jobs/graph.py): hash "<caller> -> <callee>" -> JSON of the edge's figures (the
# service hash's fields), ``urls`` (URL -> figures) and ``status_codes`` (status -> count).
GRAPH = "visibility_graph"
GRAPH_EDGE_SEPARATOR = " -> "


def graph(window: bool = False, source: str | None = None) -> str:
    """Hash of the graph's edges over the whole retention or the sliding window; without ``source``
    each edge as the source that saw most of its requests measured it."""
    return _of_source(f"{GRAPH}:window" if window else GRAPH, source)


def graph_edge_field(caller: str, callee: str) -> str:
    return f"{caller}{GRAPH_EDGE_SEPARATOR}{callee}"


def graph_edge_of_field(member: str) -> tuple[str, str]:
    """(caller, callee) of a field of a graph hash."""
    caller, _, callee = member.partition(GRAPH_EDGE_SEPARATOR)
    return caller, callee


def status_url_member(status_code: str, url: str) -> str:
    """Member of ``span_status_codes_z``."""
    return f"{status_code}, {url}"


def node_url_member(node_id: str, url: str) -> str:
    """Member of ``span_node_url_z``."""
    return f"{node_id}, {url}"


# 3e. Keys reset by /visibility/clear (the original's list; derived keys it forgot are added
# by the analytics module, which owns them).
CLEARED_SETS_AND_ZSETS = (
    SPAN_USER_AGENT,
    SPAN_URLS,
    SPAN_URLS_Z,
    SPAN_STATUS_CODES_Z,
    SPAN_NODE_URL_Z,
    SPAN_NODE_ID_Z,
    SPAN_USER_AGENT_Z,
    SPAN_STATUS_CODE,
    SPAN_NODE_ID,
    SPAN_UPSTREAM_CLUSTER,
    SPAN_OPERATION_NAME,
)

# 3f. Snort IDS
SNORT_EVENTS = "snort_events"
# New: the last event id handed out (INCR), so ids stay unique across IDS engine restarts.
SNORT_EVENT_SEQ = "snort_event_seq"


def snort_event(event_id: str | int) -> str:
    """Hash of one IDS alert."""
    return f"snort_event:{event_id}"


SNORT_EVENT_FIELDS = (
    "sensor-id",
    "event-id",
    "event-second",
    "event-microsecond",
    "signature-id",
    "generator-id",
    "signature-revision",
    "classification-id",
    "priority",
    "source-ip",
    "destination-ip",
    "source-ip.raw",
    "destination-ip.raw",
    "sport-itype",
    "dport-icode",
    "protocol",
    "impact-flag",
    "impact",
    "blocked",
    "mpls-label",
    "vlan-id",
    "pad2",
    "appid",
    "packets",
    "extra-data",
    "packet-second",
    "packet-microsecond",
    "linktype",
    "length",
    "data",
)
# New fields of snort_event:<id>: the rule's msg and classtype, and the trace of the request.
SNORT_EVENT_EXTRA_FIELDS = ("msg", "classtype", "trace-id")

# New: the WAF (modsecurity-crs, sdc/waf), in the IDS events' style: one hash per alert (a
# request some CRS rule matched), the set of their ids and the last id handed out; the newest
# audit log entries (JSON, newest first, capped); the WAF pod's settings and the proxy's check
# counters.
WAF_EVENTS = "waf_events"
WAF_EVENT_SEQ = "waf_event_seq"
WAF_AUDIT_LOG = "waf_audit_log"
WAF_AUDIT_LOG_LENGTH = 500
WAF_STATUS = "waf_status"
WAF_CHECK = "waf_check"


def waf_event(event_id: str | int) -> str:
    """Hash of one WAF alert."""
    return f"waf_event:{event_id}"


WAF_EVENT_FIELDS = ("event-id", "event-second", "transaction-id", "rule-id", "msg", "anomaly-score", "rules",
                    "blocked", "status", "client-ip", "method", "url", "user-agent", "trace-id",
                    "request-id")  # fmt: skip

# 3g. Controller file upload
UPLOAD_METADATA = "upload_metadata"

# 3h. Clovisor
CLOVISOR_LABELS = "clovisor_labels"
CLOVISOR_EGRESS_MATCH = "clovisor_egress_match"
CLOVISOR_EGRESS_MATCH_ORIGINAL = "clovior_egress_match"  # the original's misspelt key, still read
CLOVISOR_PROTO_CFG = "clovisor_proto_cfg"
CLOVISOR_PROTO_PLUGIN_CFG_CHAN = "clovisor_proto_plugin_cfg_chan"
CLOVISOR_SESSION_MATCH = "clovisor_session_match"
CLOVISOR_JAEGER_SERVER = "clovisor_jaeger_server"
CLOVISOR_JAEGER_COLLECTOR = "clovisor_jaeger_collector"
CLOVISOR_JAEGER_AGENT = "clovisor_jaeger_agent"

# 3i. Legacy (Fraser) tracing test tooling
TESTIDS = "testids"


def trace_ids_of_test(test_id: str) -> str:
    return f"traceids:{test_id}"


def span_ids_of_trace(trace_id: str) -> str:
    return f"spanids:{trace_id}"


def legacy_span(trace_id: str, span_id: str) -> str:
    return f"spans:{trace_id}:{span_id}"


def legacy_span_tags(span_id: str, trace_id: str) -> str:
    """Note the reversed id order, as in the original."""
    return f"tags:{span_id}:{trace_id}"


def route_rules(test_id: str) -> str:
    return f"route-rules-{test_id}"
