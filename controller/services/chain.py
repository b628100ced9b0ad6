"""The sample-chain service: the proxy, load balancers and servers (ModifyLB, ModifyServer,
ModifyProxy, their running configuration), the snort IDS (rules, start and stop, status, the
alerts in Redis) and the files the servers' upload module records."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from clover import keys, pods
from clover.config import Config
from controller import schemas, stats
from controller.errors import ApiError, Problem, bad_request, invalid
from controller.services.grpc_status import http_status
from controller.services.store import RedisStore
from controller.validate import check
from sdc import grpc_client as sdc
from sdc import specs as sdc_specs
from sdc.names import in_namespace

UPLOADED = "Uploaded file(s) successfully"

T = TypeVar("T")


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


def _sdc_error(exc: sdc.SdcError, relay: Relay, schema: Mapping[str, Any] | None = None) -> ApiError:
    """A sample-chain failure as an ApiError. Refusals keep the pod's (or sdc.specs') text, which
    names the field ("Invalid value in json/yaml: lb_list[0].url is required", "Failed to modify
    nginx config: files[0].src_file ... does not exist"); an unreachable pod says which address
    was dialled."""
    text = str(exc)
    status = http_status(exc.code)
    if status == 503:
        return ApiError(
            503, text if text.startswith("Error connecting") else f"Error connecting to {relay.what} via gRPC: {text}"
        )
    if status == 500:
        return ApiError(500, f"{relay.failed}: {text}")
    return ApiError(status, text, field_in(text, schema or {}))


def _relay(relay: Relay, call: Callable[[], T], schema: Mapping[str, Any] | None = None) -> T:
    try:
        return call()
    except sdc.SdcError as exc:
        raise _sdc_error(exc, relay, schema) from None


_HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*\.?")  # what getaddrinfo can encode


def _value(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class ChainService:
    def __init__(self, cfg: Config, redis: RedisStore):
        self.cfg = cfg
        self.redis = redis

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
            socket.getaddrinfo(in_namespace(self.cfg, name), None)
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
        return _relay(LB_RELAY, lambda: sdc.modify_lb(self.cfg, body or {}), schemas.LB)

    def modify_server(self, body: Mapping[str, Any] | None) -> str:
        target, _ = self._sdc_spec(sdc_specs.server_request, body, schemas.SERVER, SERVER_RELAY)
        self._known(target, "server_name")
        return _relay(SERVER_RELAY, lambda: sdc.modify_server(self.cfg, body or {}), schemas.SERVER)

    def modify_proxy(self, body: Mapping[str, Any] | None) -> str:
        target, _ = self._sdc_spec(sdc_specs.proxy_request, body, schemas.PROXY, PROXY_RELAY)
        self._known(target, "server_name")
        return _relay(PROXY_RELAY, lambda: sdc.modify_proxy(self.cfg, body or {}), schemas.PROXY)

    def chain_config(self, name: str) -> dict[str, Any]:
        """The running configuration of a proxy, lb or server pod."""
        self._known(name, "name")
        return _relay(CHAIN_QUERY, lambda: sdc.get_config(self.cfg, name))

    def add_rule(self, body: Mapping[str, Any] | None) -> str:
        self._sdc_spec(sdc_specs.rule_request, body, schemas.IDS_RULE, RULE_RELAY)
        return _relay(RULE_RELAY, lambda: sdc.add_rule(self.cfg, body or {}), schemas.IDS_RULE)

    def delete_rules(self, body: Mapping[str, Any] | None) -> str:
        check(schemas.IDS_RULE_DELETE, body, RULE_DELETE.invalid)
        sids = list((body or {})["sids"])
        return _relay(RULE_DELETE, lambda: sdc.delete_rules(self.cfg, sids), schemas.IDS_RULE_DELETE)

    def start_ids(self) -> str:
        return _relay(IDS_START, lambda: sdc.start_snort(self.cfg))

    def stop_ids(self) -> str:
        return _relay(IDS_STOP, lambda: sdc.stop_snort(self.cfg))

    def ids_status(self) -> dict[str, Any]:
        return _relay(IDS_QUERY, lambda: sdc.snort_status(self.cfg))

    def ids_rules(self, scope: str = "local", sids: list[str] | None = None) -> list[dict[str, Any]]:
        if scope not in ("local", "all"):
            raise bad_request(f"scope {scope!r} must be local or all", "scope")
        return _relay(IDS_QUERY, lambda: sdc.list_rules(self.cfg, sids, scope=scope))

    def event_field(self, event_key: str, field: str) -> bytes | None:
        """``/snort/get_events``: one field of an alert hash, raw; no key but ``snort_event:<N>``."""
        if not re.fullmatch(r"snort_event:[0-9]+", event_key):
            raise bad_request(f"event_key {event_key!r} must be an alert key snort_event:<number>", "event_key")
        value = self.redis.raw.hget(event_key, field)
        return value if isinstance(value, bytes) or value is None else str(value).encode()

    def alerts(self, limit: int = 20) -> dict[str, Any]:
        total, newest = stats.recent_alerts(self.redis.raw, limit)
        return {"total": total, "alerts": newest}

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
            self.redis.text.sadd(keys.UPLOAD_METADATA, *entries)
        return UPLOADED

    def uploads(self) -> list[str]:
        return sorted(self.redis.text.smembers(keys.UPLOAD_METADATA))  # type: ignore[arg-type]  # decoded: str members
