"""What the controller does, independent of HTTP: the REST routes and the dashboard both call
these methods.

Relays go through the other rooms' client modules (``collector.client``, ``sdc.grpc_client``,
``validation.client``); their failures become ApiErrors with the original controller's texts
("Error connecting to LB via gRPC", "Invalid value in IDS rule json/yaml", ...) and a status a
script can act on: 400 bad input (naming the field), 404 nothing there, 409 wrong state,
503 a service that cannot be reached, 500 a service that failed.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc
import redis
from google.protobuf.json_format import MessageToDict

from clover import figures, keys, pods
from clover.config import Config
from collector import client as collector
from controller import schemas, stats
from controller.errors import ApiError, Problem, bad_request, invalid
from controller.validate import check
from jobs.publish import clear_published
from sdc import grpc_client as sdc
from sdc import specs as sdc_specs
from validation import client as validation
from validation.plan import PlanError, parse_plan

log = logging.getLogger(__name__)

UPDATED = "Updated visibility config"
UPLOADED = "Uploaded file(s) successfully"
TRACK_ONE = "Specify at least one service to track"
R_TYPES = {"log": "log", "summary": "summary", "detail": "results", "results": "results", "jtl": "results"}
RESULT_FORMATS = ("", "csv", "json", "text")

_GRPC_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
}


@dataclass(frozen=True)
class Relay:
    """How one sample-service route words its errors (the original's texts)."""

    what: str  # "LB", "server", "IDS"
    invalid: str  # "Invalid value in LB json/yaml"
    failed: str  # "Error modifying LB server list"


LB_RELAY = Relay("LB", "Invalid value in LB json/yaml", "Error modifying LB server list")
SERVER_RELAY = Relay("server", "Invalid value in server json/yaml", "Error modifying server")
PROXY_RELAY = Relay("proxy", "Invalid value in proxy json/yaml", "Error modifying proxy")
RULE_RELAY = Relay("IDS", "Invalid value in IDS rule json/yaml", "Error adding IDS rule")
IDS_START = Relay("IDS", "Invalid IDS request", "Error starting IDS")
IDS_STOP = Relay("IDS", "Invalid IDS request", "Error stopping IDS")
RULE_DELETE = Relay("IDS", "Invalid IDS rule deletion", "Error deleting IDS rules")
IDS_QUERY = Relay("IDS", "Invalid IDS request", "Error querying IDS")
CHAIN_QUERY = Relay("pod", "Invalid request", "Error reading the configuration")


_FIELD_IN_TEXT = re.compile(
    r"^(?:Failed to [^:]+: |Invalid value in json/yaml: )"
    r"(?:the \w+ spec: unknown field\(s\) (?P<unknown>[\w.-]+)|(?P<field>[A-Za-z_][\w.\[\]-]*)(?::| ))"
)


def field_in(text: str, schema: Mapping[str, Any]) -> str | None:
    """The request field a sample-chain refusal names (``lb_list[0].url is required``), if it
    is one of the body's fields."""
    m = _FIELD_IN_TEXT.match(text)
    if not m:
        return None
    if m.group("unknown"):
        return m.group("unknown")
    name = m.group("field")
    proto_list = re.fullmatch(r"slb_list\[(\d+)\]", name)  # the LB pod names its gRPC field
    if proto_list and "lb_list" in schema.get("properties", {}):
        return f"lb_list[{proto_list.group(1)}].url"
    root = re.split(r"[.\[]", name, maxsplit=1)[0]
    return name if root in schema.get("properties", {}) else None


def _source(source: str | None) -> str | None:
    """A figures source from a request (None: each service's headline source)."""
    if source in (None, ""):
        return None
    if source not in figures.SOURCES:
        raise bad_request(f"source {source!r} must be one of {', '.join(figures.SOURCES)}", "source")
    return source


def _sdc_error(exc: sdc.SdcError, relay: Relay, schema: Mapping[str, Any] | None = None) -> ApiError:
    """A sample-chain failure as an ApiError. Refusals keep the pod's (or sdc.specs') text, which
    names the field ("Invalid value in json/yaml: lb_list[0].url is required", "Failed to modify
    nginx config: files[0].src_file ... does not exist"); an unreachable pod says which address
    was dialled."""
    text = str(exc)
    status = _GRPC_STATUS.get(exc.code, 500) if exc.code is not None else 500
    if status == 503:
        return ApiError(
            503, text if text.startswith("Error connecting") else f"Error connecting to {relay.what} via gRPC: {text}"
        )
    if status == 500:
        return ApiError(500, f"{relay.failed}: {text}")
    return ApiError(status, text, field_in(text, schema or {}))


def _validation_error(exc: validation.ValidationError) -> ApiError:
    return ApiError(_GRPC_STATUS.get(exc.code, 500), str(exc))


def _collector_error(exc: collector.CollectorUnavailable) -> ApiError:
    text = str(exc)
    if text.startswith("invalid request: "):
        return bad_request(f"Invalid value in json/yaml: {text.removeprefix('invalid request: ')}")
    return ApiError(503, text)


def _reply(text: str) -> str:
    """A collector reply that reports a failure becomes an error (409 for a state conflict)."""
    if text.startswith("Failed"):
        raise ApiError(409 if "not running" in text else 500, text)
    return text


def _text(value: Any) -> str:
    return str(value).strip()


_HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*\.?")  # what getaddrinfo can encode


def _value(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Backend:
    """The controller's work, shared by the REST API and the dashboard."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.store = stats.connect(cfg.redis_url)
        self.raw = stats.connect(cfg.redis_url, decode=False)

    def close(self) -> None:
        self.store.close()
        self.raw.close()

    # -- collector and visibility ----------------------------------------------------------

    def init_visibility(self) -> str:
        try:
            return _reply(collector.init_visibility(self.cfg.collector_grpc))
        except collector.CollectorUnavailable as exc:
            raise _collector_error(exc) from None

    def truncate(self) -> str:
        try:
            return _reply(collector.truncate_visibility(self.cfg.collector_grpc))
        except collector.CollectorUnavailable as exc:
            raise _collector_error(exc) from None

    def collector_settings(self, body: Mapping[str, Any] | None) -> dict[str, Any]:
        """StartCollector's fields from a start_visibility body. A missing field takes a default
        (the original refused the body unless all five were there, docs/compatibility.md §11.7): a host without its
        port gets the port of the configured endpoint; nothing at all leaves the collector its
        own configuration."""
        check(schemas.COLLECTOR_START, body, "Invalid value in json/yaml")
        body = body or {}
        settings: dict[str, Any] = {}
        if "sample_interval" in body:
            settings["sinterval"] = float(body["sample_interval"])
        backend = str(body.get("t_backend") or self.cfg.trace_backend)
        if "t_backend" in body:
            settings["t_backend"] = backend
        trace = urlsplit(self.cfg.jaeger_url if backend == "jaeger" else self.cfg.zipkin_url)
        prometheus = urlsplit(self.cfg.prometheus_url)
        for host, port, default in (("t_host", "t_port", trace), ("m_host", "m_port", prometheus)):
            if host in body or port in body:
                settings[host] = _text(body[host]) if host in body else default.hostname
                settings[port] = int(body[port]) if port in body else default.port
        return settings

    def start_collector(self, body: Mapping[str, Any] | None) -> str:
        settings = self.collector_settings(body)
        try:
            return _reply(collector.start_collector(self.cfg.collector_grpc, **settings))
        except collector.CollectorUnavailable as exc:
            raise _collector_error(exc) from None

    def stop_collector(self) -> str:
        try:
            return _reply(collector.stop_collector(self.cfg.collector_grpc))
        except collector.CollectorUnavailable as exc:
            raise _collector_error(exc) from None

    def collector_status(self) -> dict[str, Any]:
        try:
            status = collector.collector_status(self.cfg.collector_grpc)
        except collector.CollectorUnavailable as exc:
            raise _collector_error(exc) from None
        result: dict[str, Any] = MessageToDict(
            status, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        return result

    def set_visibility(self, body: Mapping[str, Any] | None) -> str:
        """Replace what visibility tracks (``/visibility/set``, ``/collector/set``)."""
        if not body:
            raise bad_request(TRACK_ONE, "services")
        try:
            check(schemas.VISIBILITY_SET, body, "Invalid value in json/yaml")
        except ApiError as exc:
            if exc.field == "services" and exc.problems and exc.problems[0].message == TRACK_ONE:
                raise bad_request(TRACK_ONE, "services", exc.problems) from None
            raise
        has_prefixes, has_suffixes = "metric_prefixes" in body, "metric_suffixes" in body
        if has_prefixes != has_suffixes:
            missing = "metric_suffixes" if has_prefixes else "metric_prefixes"
            raise invalid(
                "Invalid value in json/yaml",
                [Problem(missing, "metric_prefixes and metric_suffixes must be given together")],
            )
        stats.write_config(
            self.store,
            [item["name"] for item in body["services"]],
            [item["prefix"] for item in body["metric_prefixes"]] if has_prefixes else None,
            [item["suffix"] for item in body["metric_suffixes"]] if has_suffixes else None,
            [item["metric"] for item in body["custom_metrics"]] if "custom_metrics" in body else None,
        )
        return UPDATED

    def set_services(self, services: list[str]) -> str:
        """The dashboard's Discovered Services selection (only the services change)."""
        return self.set_visibility({"services": [{"name": s} for s in services]})

    def clear(self) -> str:
        """``/visibility/clear``: truncate the Cassandra tables, then reset every derived Redis key
        (the analytics' ``clear_published``: the original's list, docs/compatibility.md §3e, and what it forgot,
        docs/compatibility.md §11.9). If the truncate fails, Redis is left as it was."""
        message = self.truncate()
        clear_published(self.store)
        return message

    def stats(
        self, s_type: str, limit: int | None = stats.ORIGINAL_ZSET_LIMIT, source: str | None = None
    ) -> dict[str, Any]:
        if s_type not in stats.STAT_TYPES:
            raise bad_request(f"stat type {s_type!r} must be one of {', '.join(stats.STAT_TYPES)}", "s_type")
        return stats.read_stats(self.store, s_type, limit, _source(source))

    def config(self, c_type: str) -> dict[str, list[str]]:
        if c_type not in stats.CONFIG_TYPES:
            raise bad_request(f"config type {c_type!r} must be one of {', '.join(stats.CONFIG_TYPES)}", "c_type")
        return stats.read_config(self.store, c_type)

    def url_stats(self, service: str, window: bool, source: str | None = None) -> dict[str, Any]:
        return stats.read_url_stats(self.store, service, window, _source(source))

    def metric_values(self) -> list[tuple[str, str | None]]:
        return stats.metric_values(self.store)

    def discovered_services(self) -> list[str]:
        return stats.tracing_services(self.store)

    # -- sample chain ----------------------------------------------------------------------

    def _known(self, name: str, field: str) -> None:
        """Refuse a pod name that is not a host name, or that neither the local pod registry nor
        DNS knows (before dialling it)."""
        if len(name) > 253 or not _HOST_NAME.fullmatch(name) or any(len(p) > 63 for p in name.split(".")):
            raise bad_request(
                f"Invalid value in json/yaml: {field}: {_value(name)} is not a host name (letters, digits, '-', '_' "
                "and '.'; labels of 1-63 characters, 253 in all)",
                field,
            )
        try:
            pods.resolve(self.cfg, name)
            return
        except pods.UnknownService:
            pass
        try:
            socket.getaddrinfo(name, None)
        except (OSError, UnicodeError):
            raise bad_request(
                f"Invalid value in json/yaml: {field}: no pod or service named {name!r} "
                "(not in the local pod registry, and not resolvable)",
                field,
            ) from None

    def _sdc_spec(self, parse: Any, body: Any, schema: Mapping[str, Any], relay: Relay) -> Any:
        """Check a sample-chain body with the chain's own rules (sdc.specs) before anything is sent."""
        try:
            return parse(body if body is not None else {})
        except sdc_specs.SpecError as exc:
            raise _sdc_error(sdc.SdcError(f"Invalid value in json/yaml: {exc}", grpc.StatusCode.INVALID_ARGUMENT),
                             relay, schema) from None  # fmt: skip

    def modify_lb(self, body: Mapping[str, Any] | None) -> str:
        target, _ = self._sdc_spec(sdc_specs.lb_request, body, schemas.LB, LB_RELAY)
        self._known(target, "lb_name")
        try:
            return sdc.modify_lb(self.cfg, body or {})
        except sdc.SdcError as exc:
            raise _sdc_error(exc, LB_RELAY, schemas.LB) from None

    def modify_server(self, body: Mapping[str, Any] | None) -> str:
        target, _ = self._sdc_spec(sdc_specs.server_request, body, schemas.SERVER, SERVER_RELAY)
        self._known(target, "server_name")
        try:
            return sdc.modify_server(self.cfg, body or {})
        except sdc.SdcError as exc:
            raise _sdc_error(exc, SERVER_RELAY, schemas.SERVER) from None

    def modify_proxy(self, body: Mapping[str, Any] | None) -> str:
        target, _ = self._sdc_spec(sdc_specs.proxy_request, body, schemas.PROXY, PROXY_RELAY)
        self._known(target, "server_name")
        try:
            return sdc.modify_proxy(self.cfg, body or {})
        except sdc.SdcError as exc:
            raise _sdc_error(exc, PROXY_RELAY, schemas.PROXY) from None

    def chain_config(self, name: str) -> dict[str, Any]:
        """The running configuration of a proxy, lb or server pod."""
        self._known(name, "name")
        try:
            return sdc.get_config(self.cfg, name)
        except sdc.SdcError as exc:
            raise _sdc_error(exc, CHAIN_QUERY) from None

    def add_rule(self, body: Mapping[str, Any] | None) -> str:
        self._sdc_spec(sdc_specs.rule_request, body, schemas.IDS_RULE, RULE_RELAY)
        try:
            return sdc.add_rule(self.cfg, body or {})
        except sdc.SdcError as exc:
            raise _sdc_error(exc, RULE_RELAY, schemas.IDS_RULE) from None

    def delete_rules(self, body: Mapping[str, Any] | None) -> str:
        check(schemas.IDS_RULE_DELETE, body, RULE_DELETE.invalid)
        try:
            return sdc.delete_rules(self.cfg, list((body or {})["sids"]))
        except sdc.SdcError as exc:
            raise _sdc_error(exc, RULE_DELETE, schemas.IDS_RULE_DELETE) from None

    def start_ids(self) -> str:
        try:
            return sdc.start_snort(self.cfg)
        except sdc.SdcError as exc:
            raise _sdc_error(exc, IDS_START) from None

    def stop_ids(self) -> str:
        try:
            return sdc.stop_snort(self.cfg)
        except sdc.SdcError as exc:
            raise _sdc_error(exc, IDS_STOP) from None

    def ids_status(self) -> dict[str, Any]:
        try:
            return sdc.snort_status(self.cfg)
        except sdc.SdcError as exc:
            raise _sdc_error(exc, IDS_QUERY) from None

    def ids_rules(self, scope: str = "local", sids: list[str] | None = None) -> list[dict[str, Any]]:
        if scope not in ("local", "all"):
            raise bad_request(f"scope {scope!r} must be local or all", "scope")
        try:
            return sdc.list_rules(self.cfg, sids, scope=scope)
        except sdc.SdcError as exc:
            raise _sdc_error(exc, IDS_QUERY) from None

    def event_field(self, event_key: str, field: str) -> bytes | None:
        """``/snort/get_events``: one field of an alert hash, raw; no key but ``snort_event:<N>``."""
        if not re.fullmatch(r"snort_event:[0-9]+", event_key):
            raise bad_request(f"event_key {event_key!r} must be an alert key snort_event:<number>", "event_key")
        value = self.raw.hget(event_key, field)
        return value if isinstance(value, bytes) or value is None else str(value).encode()

    def alerts(self, limit: int = 20) -> dict[str, Any]:
        total, newest = stats.recent_alerts(self.raw, limit)
        return {"total": total, "alerts": newest}

    # -- validation ------------------------------------------------------------------------

    def gen_test(self, body: Any, name: str | None = None) -> str:
        if not isinstance(body, Mapping):
            raise invalid("Invalid value in test plan json/yaml", [Problem(None, "the body must be a test plan")])
        try:
            plan = parse_plan(dict(body), name)
        except PlanError as exc:
            raise invalid(
                "Invalid value in test plan json/yaml", [Problem(f or None, m) for f, m in exc.problems]
            ) from None
        try:
            return validation.gen_test(self.cfg.validation_grpc, plan)
        except validation.ValidationError as exc:
            raise _validation_error(exc) from None

    def start_test(self, body: Mapping[str, Any] | None) -> validation.Started:
        check(schemas.JMETER_START, body, "Invalid value in json/yaml")
        body = body or {}
        slaves = body.get("slave_list", "")
        slave_ips = [s.strip() for s in (slaves.split(",") if isinstance(slaves, str) else slaves) if s.strip()]
        try:
            return validation.start_test(
                self.cfg.validation_grpc,
                num_slaves=int(body.get("num_slaves") or 0),
                test_plan=str(body.get("test_plan", "")),
                slave_ips=slave_ips,
            )
        except validation.ValidationError as exc:
            raise _validation_error(exc) from None

    def results(self, r_type: str, fmt: str = "") -> validation.Results:
        if r_type not in R_TYPES:
            raise bad_request(f"result type {r_type!r} must be one of {', '.join(R_TYPES)}", "r_type")
        if fmt not in RESULT_FORMATS:
            raise bad_request(f"format {fmt!r} must be one of csv, json, text", "format")
        try:
            return validation.get_results(self.cfg.validation_grpc, R_TYPES[r_type], fmt)
        except validation.ValidationError as exc:
            raise _validation_error(exc) from None

    def test_status(self) -> dict[str, Any]:
        try:
            status = validation.get_status(self.cfg.validation_grpc)
        except validation.ValidationError as exc:
            raise _validation_error(exc) from None
        return {**asdict(status), "slave_hosts": list(status.slave_hosts), "done": status.done}

    def stop_test(self, now: bool = False) -> str:
        try:
            return validation.stop_test(self.cfg.validation_grpc, now=now)
        except validation.ValidationError as exc:
            raise _validation_error(exc) from None

    # -- uploads ---------------------------------------------------------------------------

    def record_upload(self, form: Mapping[str, str]) -> str:
        """``/upload``: the fields the servers' upload module passes (``<field>.name``,
        ``.path``, ``.server``) as ``name:path:server`` entries of ``upload_metadata``."""
        entries = []
        for key in sorted(form):
            if not key.endswith(".name") or not form[key]:
                continue
            prefix = key[: -len(".name")]
            missing = [f"{prefix}.{p}" for p in ("path", "server") if not form.get(f"{prefix}.{p}")]
            if missing:
                raise invalid("Unable to write file metadata", [Problem(m, "is required") for m in missing])
            entries.append(f"{form[key]}:{form[prefix + '.path']}:{form[prefix + '.server']}")
        if entries:
            self.store.sadd(keys.UPLOAD_METADATA, *entries)
        return UPLOADED

    def uploads(self) -> list[str]:
        return sorted(self.store.smembers(keys.UPLOAD_METADATA))  # type: ignore[arg-type]

    def redis_ok(self) -> bool:
        try:
            return bool(self.store.ping())
        except redis.RedisError:
            return False
