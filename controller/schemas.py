"""JSON Schemas of the request bodies, for the OpenAPI description and the request validation.

Bodies are the original's (docs/compatibility.md §5): the sample yaml files turned into JSON. Values that the
yaml files write as strings (``server_port: "9180"``) may also be numbers. Unknown fields are
refused, so a misspelt field is never silently ignored. ``x-expect`` words what a value must
be when the plain JSON Schema wording would not help (``a port number (1-65535)``).

The controller's own bodies (visibility, collector, validation start) are checked against these
schemas. The sample-chain bodies (LoadBalancer, Server, Proxy, IdsRule) and the test plan are
checked by their owners' rules (``sdc.specs``, ``validation.plan``) so that the CLI, the
controller and the pods refuse exactly the same things; their schemas here describe them.
"""

from __future__ import annotations

from typing import Any

from clover.figures import FIGURES

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
EVENT_KEY_PATTERN = r"^snort_event:[0-9]+$"  # /snort/get_events reads these hashes and no other key
STAT_TYPES = ("system", "metrics", "tracing", "all")
CONFIG_TYPES = ("services", "metrics", "all")

TEXT: dict[str, Any] = {"type": ["string", "number"], "x-expect": "a string or a number"}
PORT: dict[str, Any] = {
    "anyOf": [{"type": "integer", "minimum": 1, "maximum": 65535}, {"type": "string", "pattern": r"^\s*\d{1,5}\s*$"}],
    "x-expect": "a port number (1-65535)",
    "x-port": True,
}
POSITIVE_NUMBER: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "string", "pattern": r"^\s*(\d+(\.\d*)?|\.\d+)\s*$"},
    ],
    "x-expect": "a number of seconds greater than 0",
    "x-positive": True,
}
COUNT: dict[str, Any] = {  # the gRPC messages' int32 fields
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        {"type": "string", "pattern": r"^\s*\d{1,9}\s*$"},
    ],
    "x-expect": "a whole number (0 to 2147483647)",
}


def _items(key: str, *, required: bool = True, pattern: str | None = None) -> dict[str, Any]:
    """A list of one-key objects, the original's shape: ``[{prefix: ...}, ...]``."""
    value: dict[str, Any] = {"type": "string", "minLength": 1}
    if pattern:
        value["pattern"] = pattern
        value["x-expect"] = "a service name (letters, digits, '.', '_' and '-')"
    return {
        "type": "array",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": [key] if required else [],
            "properties": {key: value},
        },
    }


VISIBILITY_SET: dict[str, Any] = {
    "title": "VisibilityConfig",
    "description": "What visibility tracks (set_visibility.yaml). Service names may use '-' or '_' "
    "(stored with '_'). metric_prefixes and metric_suffixes go together: given, both replace the "
    "tracked Prometheus names; custom_metrics, given, replaces the custom metrics.",
    "type": "object",
    "additionalProperties": False,
    "required": ["services"],
    "x-required-message": {"services": "Specify at least one service to track"},
    "properties": {
        "services": {**_items("name", pattern=NAME_PATTERN), "minItems": 1,
                     "x-message": "Specify at least one service to track"},
        "metric_prefixes": _items("prefix"),
        "metric_suffixes": _items("suffix"),
        "custom_metrics": _items("metric"),
    },
    "example": {
        "services": [{"name": "proxy_access_control"}, {"name": "clover_server1"}],
        "metric_prefixes": [{"prefix": "envoy_cluster_outbound_9180__"}],
        "metric_suffixes": [{"suffix": "_default_svc_cluster_local_upstream_rq_2xx"}],
        "custom_metrics": [{"metric": "envoy_tracing_zipkin_spans_sent"}],
    },
}  # fmt: skip

COLLECTOR_START: dict[str, Any] = {
    "title": "CollectorStart",
    "description": "start_visibility.yaml. Every field is optional: a missing one takes the "
    "controller's configured default (the trace backend and Prometheus of CLOVER_JAEGER_URL / "
    "CLOVER_ZIPKIN_URL and CLOVER_PROMETHEUS_URL, 5 s).",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sample_interval": POSITIVE_NUMBER,
        "t_host": {"type": "string", "minLength": 1},
        "t_port": PORT,
        "m_host": {"type": "string", "minLength": 1},
        "m_port": PORT,
        "t_backend": {"type": "string", "enum": ["jaeger", "zipkin"]},
    },
    "example": {"sample_interval": "2", "t_host": "127.0.0.1", "t_port": "16686", "m_host": "127.0.0.1",
                "m_port": "9090"},
}  # fmt: skip

STATS_REQUEST: dict[str, Any] = {
    "title": "StatsRequest",
    "type": "object",
    "additionalProperties": False,
    "properties": {"stat_type": {"type": "string", "enum": list(STAT_TYPES)}},
}

LB: dict[str, Any] = {
    "title": "LoadBalancer",
    "description": "lbv1.yaml / lbv2.yaml: the server list of one load balancer pod (ModifyLB).",
    "type": "object",
    "additionalProperties": False,
    "required": ["lb_name", "lb_list"],
    "properties": {
        "lb_name": {"type": "string", "minLength": 1, "pattern": NAME_PATTERN,
                    "x-expect": "a pod or service name such as http-lb-v2.default"},
        "server_port": PORT,
        "server_name": TEXT,
        "lb_group": TEXT,
        "lb_path": TEXT,
        "lb_list": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "object", "additionalProperties": False, "required": ["url"],
                      "properties": {"url": {"type": "string", "minLength": 1}}},
        },
    },
    "example": {"server_port": "9180", "server_name": "http-lb-v2", "lb_name": "http-lb-v2.default",
                "lb_group": "cloverlb", "lb_path": "/",
                "lb_list": [{"url": "clover-server4:9180"}, {"url": "clover-server5:9180"}]},
}  # fmt: skip

SERVER: dict[str, Any] = {
    "title": "Server",
    "description": "server.yaml: one server pod's site, locations and file moves (ModifyServer).",
    "type": "object",
    "additionalProperties": False,
    "required": ["server_name"],
    "properties": {
        "server_name": {"type": "string", "minLength": 1, "pattern": NAME_PATTERN},
        "server_port": PORT,
        "site_root": TEXT,
        "site_index": TEXT,
        "upload_path_config": TEXT,
        "upload_path_test": TEXT,
        "locations": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["uri_match"],
                "properties": {
                    "uri_match": {"type": "string", "minLength": 1},
                    "directive": TEXT,
                    "path": TEXT,
                    "response_size": COUNT,
                    "latency_ms": {"type": ["number", "string"]},
                    "status": COUNT,
                },
            },
        },
        "files": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["src_file", "dest_file"],
                "properties": {"src_file": {"type": "string", "minLength": 1},
                               "dest_file": {"type": "string", "minLength": 1}},
            },
        },
    },
}  # fmt: skip

PROXY: dict[str, Any] = {
    "title": "Proxy",
    "description": "The proxy's upstream, mirror and block time (ModifyProxy); server_name defaults to "
    "proxy-access-control.",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "server_name": {"type": "string", "minLength": 1, "pattern": NAME_PATTERN},
        "server_port": PORT,
        "location_path": TEXT,
        "proxy_path": TEXT,
        "mirror_path": TEXT,
        "block_seconds": COUNT,
    },
}

IDS_RULE: dict[str, Any] = {
    "title": "IdsRule",
    "description": "idsrule_*.yaml: one rule for snort-ids' local.rules (AddRules), or {rule: <whole rule "
    "text>}. protocol, msg and sid are required unless rule is given. An empty content is left out.",
    "type": "object",
    "additionalProperties": False,
    "properties": {k: TEXT for k in ("protocol", "dest_port", "dest_ip", "src_port", "src_ip", "msg", "content",
                                      "sid", "rev", "rule")},
    "example": {"sid": "10000003", "protocol": "tcp", "dest_port": "any", "dest_ip": "$HOME_NET",
                "src_port": "any", "src_ip": "any", "msg": "MALWARE-CNC User-Agent ASafaWeb Scan", "rev": "001",
                "content": '"asafaweb.com"'},
}  # fmt: skip

IDS_RULE_DELETE: dict[str, Any] = {
    "title": "IdsRuleDelete",
    "description": "The signature ids of local rules to delete (DeleteRules).",
    "type": "object",
    "additionalProperties": False,
    "required": ["sids"],
    "properties": {"sids": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^[0-9]+$"}}},
    "example": {"sids": ["10000003"]},
}

SNORT_EVENT_QUERY: dict[str, Any] = {
    "title": "SnortEventQuery",
    "type": "object",
    "additionalProperties": False,
    "required": ["event_key", "field"],
    "properties": {
        "event_key": {"type": "string", "pattern": EVENT_KEY_PATTERN, "x-expect": "an alert key snort_event:<number>"},
        "field": {"type": "string", "minLength": 1},
    },
}

TEST_PLAN: dict[str, Any] = {
    "title": "TestPlan",
    "description": "jmeter_testplan.yaml: load_spec {num_threads, loops, ramp_time, duration} and url_list "
    "[{name, url, method, user-agent, headers?, body?}]. Checked field by field; every problem is "
    "reported with its field.",
    "type": "object",
    "example": {"load_spec": {"num_threads": 5, "loops": 2, "ramp_time": 60, "duration": 80},
                "url_list": [{"name": "url1", "url": "http://proxy-access-control.default:9180", "method": "GET",
                              "user-agent": "chrome"}]},
}  # fmt: skip

JMETER_START: dict[str, Any] = {
    "title": "TestStart",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "num_slaves": COUNT,
        "slave_list": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                       "x-expect": "a comma-separated string or a list of host[:port]"},
        "test_plan": {"type": "string"},
    },
}  # fmt: skip

BODIES: dict[str, dict[str, Any]] = {
    s["title"]: s
    for s in (VISIBILITY_SET, COLLECTOR_START, STATS_REQUEST, LB, SERVER, PROXY, IDS_RULE, IDS_RULE_DELETE,
              SNORT_EVENT_QUERY,
              TEST_PLAN, JMETER_START)
}  # fmt: skip

# -- replies (documentation only) ------------------------------------------------------------


ERROR: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error", "status"],
    "properties": {
        "error": {"type": "string", "description": "what went wrong, starting with the original controller's text"},
        "field": {"type": ["string", "null"], "description": "the request field at fault, e.g. services[0].name"},
        "status": {"type": "integer"},
        "problems": {
            "type": "array",
            "items": {"type": "object", "properties": {"field": {"type": ["string", "null"]},
                                                       "message": {"type": "string"}}},
        },
    },
}  # fmt: skip

MESSAGE: dict[str, Any] = {
    "title": "Message",
    "description": "A relay's reply text as JSON (send Accept: application/json); without it the reply is the "
    "plain text, as in the original.",
    "type": "object",
    "properties": {"message": {"type": "string"}},
}

_FIGURES: dict[str, Any] = {
    "type": "object",
    "description": "A service's figures (clover/figures.py): its requests counted once, as the source named in "
    '`source` measured them. "NA" where nothing was measured, null where the analytics have not written the '
    "field.",
    "properties": {
        f.json: {"type": ["string", "null"], "description": f"{f.label} ({f.unit.description})"} for f in FIGURES
    },
}
_COUNTS = {"type": "array", "items": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}]},
           "description": "[member, count] pairs ascending by count: the highest `limit` (default 51)"}  # fmt: skip

STATS_REPLY: dict[str, Any] = {
    "title": "Stats",
    "type": "object",
    "properties": {
        "trace_count": {"type": ["string", "null"]},
        "span_count": {"type": ["string", "null"]},
        "metric_count": {"type": ["string", "null"]},
        "metrics_time": {
            "type": "array",
            "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "service": {"type": "string"}, "prefix": {"type": "string"},
                "suffix": {"type": "string"}, "values": {"type": "array", "items": {"type": "string"}}}},
        },
        "response_times": {
            "type": "array",
            "items": {"type": "object", "properties": {"name": {"type": "string"}, **_FIGURES["properties"],
                                                       "window": _FIGURES}},
        },
        **{k: {"type": "array", "items": {"type": "string"}} for k in ("request_urls", "user_agents",
           "status_codes", "op_names", "node_ids", "upstream_clusters")},
        **{k: _COUNTS for k in ("user_agent_count", "request_url_count", "status_code_count", "node_url_count",
                                "node_id_count")},
    },
}  # fmt: skip

CONFIG_REPLY: dict[str, Any] = {
    "title": "VisibilityConfigReply",
    "type": "object",
    "properties": {k: {"type": "array", "items": {"type": "string"}} for k in ("visibility_services",
                   "metric_prefixes", "metric_suffixes", "custom_metrics")},
}  # fmt: skip

URL_STATS_REPLY: dict[str, Any] = {"title": "UrlStats", "type": "object", "additionalProperties": _FIGURES}
ANY_OBJECT: dict[str, Any] = {"title": "Object", "type": "object"}

GRAPH_REPLY: dict[str, Any] = {
    "title": "Graph",
    "type": "object",
    "description": "The mesh as a graph (jobs/graph.py): a node per service or caller address, an edge per caller "
    "and callee with the callee's figures for the caller's requests.",
    "properties": {
        "window": {"type": "boolean"},
        "source": {"type": ["string", "null"]},
        "nodes": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "request_count": {"type": "integer"}, "errors": {"type": "integer"},
            "error_rate": {"type": ["number", "null"]}, "request_rate": {"type": "number"},
            "callers": {"type": "array", "items": {"type": "string"}},
            "callees": {"type": "array", "items": {"type": "string"}}}}},
        "edges": {"type": "array", "items": {"type": "object", "properties": {
            "caller": {"type": "string"}, "callee": {"type": "string"}, **_FIGURES["properties"],
            "urls": {"type": "object", "additionalProperties": _FIGURES},
            "status_codes": {"type": "object", "additionalProperties": {"type": "integer"}}}}},
    },
}  # fmt: skip

REPLIES: dict[str, dict[str, Any]] = {
    s["title"]: s for s in (ERROR, MESSAGE, STATS_REPLY, CONFIG_REPLY, URL_STATS_REPLY, ANY_OBJECT, GRAPH_REPLY)
}
