"""gRPC clients of the sample chain: what cloverctl runs today and the controller relays later.

Each function takes the configuration and the request body (the controller's JSON or the yaml
file, as a mapping), sends it to the pod it names and returns the pod's reply text. Names go
through the local pod registry first (``http-lb-v2.default`` -> the pod's address), else they
are dialled as host names (a real cluster; short ones in ``CLOVER_SDC_NAMESPACE`` when set).
Problems raise ``SdcError`` with a message fit to show a user: a refused change carries the
pod's reason, an unreachable pod says which address was dialled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from clover.config import Config
from protos import nginx_pb2, nginx_pb2_grpc, snort_pb2, snort_pb2_grpc
from sdc import specs, topology
from sdc.names import in_namespace, registry_lookup

TIMEOUT = 30.0
SNORT = "snort-ids"


class SdcError(RuntimeError):
    """A call that did not succeed; ``str()`` is the message for the user."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Endpoint:
    name: str
    address: str


def endpoint(cfg: Config, name: str, port: int) -> Endpoint:
    """Where the pod or service ``name`` answers gRPC on ``port``."""
    ips, _ = registry_lookup(cfg, name)
    host = ips[0] if ips else in_namespace(cfg, name)
    return Endpoint(name, f"{host}:{port}")


def _call(target: Endpoint, fn: Any, request: Any, timeout: float) -> Any:
    with grpc.insecure_channel(target.address) as channel:
        try:
            return fn(channel)(request, timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            details = exc.details() or code.name
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise SdcError(
                    f"Error connecting to {target.name} ({target.address}) via gRPC: {details}", code
                ) from None
            raise SdcError(details, code) from None


def _spec(parse: Any, body: Any) -> Any:
    try:
        return parse(body)
    except specs.SpecError as exc:
        raise SdcError(f"Invalid value in json/yaml: {exc}", grpc.StatusCode.INVALID_ARGUMENT) from None


def _nginx(cfg: Config, name: str) -> Endpoint:
    return endpoint(cfg, name, topology.GRPC_PORT)


def _snort(cfg: Config) -> Endpoint:
    return endpoint(cfg, SNORT, topology.IDS_GRPC_PORT)


def modify_lb(cfg: Config, body: Mapping[str, Any], timeout: float = TIMEOUT) -> str:
    """ModifyLB on ``body["lb_name"]`` (e.g. lbv2.yaml) -> "Modified nginx config"."""
    target, request = _spec(specs.lb_request, body)
    stub = nginx_pb2_grpc.ControllerStub
    return str(_call(_nginx(cfg, target), lambda ch: stub(ch).ModifyLB, request, timeout).message)


def modify_server(cfg: Config, body: Mapping[str, Any], timeout: float = TIMEOUT) -> str:
    """ModifyServer on ``body["server_name"]`` (e.g. server.yaml)."""
    target, request = _spec(specs.server_request, body)
    stub = nginx_pb2_grpc.ControllerStub
    return str(_call(_nginx(cfg, target), lambda ch: stub(ch).ModifyServer, request, timeout).message)


def modify_proxy(cfg: Config, body: Mapping[str, Any], timeout: float = TIMEOUT) -> str:
    """ModifyProxy on ``body["server_name"]`` (default proxy-access-control)."""
    target, request = _spec(specs.proxy_request, body)
    stub = nginx_pb2_grpc.ControllerStub
    return str(_call(_nginx(cfg, target), lambda ch: stub(ch).ModifyProxy, request, timeout).message)


def process_alert(
    cfg: Config,
    event_id: str = "",
    source_ip: str = "",
    block_seconds: int = 0,
    proxy: str = "proxy-access-control",
    timeout: float = TIMEOUT,
) -> str:
    """ProcessAlerts: block ``source_ip`` (or the source of event ``event_id``) at the proxy."""
    request = nginx_pb2.AlertMessage(
        event_id=event_id, redis_key="snort_events", source_ip=source_ip, block_seconds=block_seconds
    )
    stub = nginx_pb2_grpc.ControllerStub
    return str(_call(_nginx(cfg, proxy), lambda ch: stub(ch).ProcessAlerts, request, timeout).message)


def get_config(cfg: Config, name: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The running configuration of a proxy, lb or server pod, as a dict."""
    stub = nginx_pb2_grpc.ControllerStub
    dump = _call(_nginx(cfg, name), lambda ch: stub(ch).GetConfig, nginx_pb2.ConfigQuery(), timeout)
    result: dict[str, Any] = MessageToDict(dump, preserving_proto_field_name=True)
    return result


def add_rule(cfg: Config, body: Mapping[str, Any], timeout: float = TIMEOUT) -> str:
    """AddRules (e.g. idsrule_scan.yaml) -> "Added to local rules"."""
    request = _spec(specs.rule_request, body)
    stub = snort_pb2_grpc.ControllerStub
    return str(_call(_snort(cfg), lambda ch: stub(ch).AddRules, request, timeout).message)


def start_snort(cfg: Config, timeout: float = TIMEOUT) -> str:
    stub = snort_pb2_grpc.ControllerStub
    return str(_call(_snort(cfg), lambda ch: stub(ch).StartSnort, snort_pb2.ControlSnort(pid="0"), timeout).message)


def stop_snort(cfg: Config, timeout: float = TIMEOUT) -> str:
    stub = snort_pb2_grpc.ControllerStub
    return str(_call(_snort(cfg), lambda ch: stub(ch).StopSnort, snort_pb2.ControlSnort(pid="0"), timeout).message)


def list_rules(
    cfg: Config, sids: list[str] | None = None, scope: str = "local", timeout: float = TIMEOUT
) -> list[dict[str, Any]]:
    stub = snort_pb2_grpc.ControllerStub
    request = snort_pb2.RuleQuery(sids=sids or [], scope=scope)
    answer = _call(_snort(cfg), lambda ch: stub(ch).ListRules, request, timeout)
    return [_fields(r) for r in answer.rules]


def delete_rules(cfg: Config, sids: list[str], timeout: float = TIMEOUT) -> str:
    stub = snort_pb2_grpc.ControllerStub
    return str(_call(_snort(cfg), lambda ch: stub(ch).DeleteRules, snort_pb2.RuleQuery(sids=sids), timeout).message)


def snort_status(cfg: Config, timeout: float = TIMEOUT) -> dict[str, Any]:
    stub = snort_pb2_grpc.ControllerStub
    answer = _call(_snort(cfg), lambda ch: stub(ch).GetStatus, snort_pb2.ControlSnort(), timeout)
    return _fields(answer)


def _fields(message: Any) -> dict[str, Any]:
    """A flat message as a dict of its fields (numbers stay numbers)."""
    return {f.name: getattr(message, f.name) for f in message.DESCRIPTOR.fields}
