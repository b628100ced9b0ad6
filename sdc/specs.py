"""The request bodies of the sample-chain commands (the controller's JSON, the yaml files) as
gRPC messages, checked field by field.

Shapes follow the original controller routes (docs/compatibility.md §5b): ``/nginx/lb`` (``lb_name``,
``lb_list: [{url}]``, ...), ``/nginx/server`` (``server_name``, ``locations``, ``files``, ...),
``/snort/addrule``; ``ModifyProxy`` has no original route and takes ConfigProxy's fields.
Values may be strings or numbers (yaml writes ``"9180"`` or ``9180``); an unknown key is an
error, so a misspelt field is never silently ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from protos import nginx_pb2, snort_pb2


class SpecError(ValueError):
    """A request body that cannot be sent; the message names the field."""


def _mapping(body: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise SpecError(f"{where} must be a mapping of field names to values, not {type(body).__name__}")
    return body


def _check_keys(body: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in body if k not in allowed)
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {', '.join(unknown)}; expected {', '.join(sorted(allowed))}")


def _text(body: Mapping[str, Any], key: str, where: str, required: bool = False) -> str:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise SpecError(f"{where}{key} is required")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SpecError(f"{where}{key} must be a string or a number, not {type(value).__name__}")
    return str(value)


INT32_MAX = 2**31 - 1  # the gRPC messages' int32 fields


def _number(body: Mapping[str, Any], key: str, where: str, kind: type = int) -> Any:
    value = body.get(key)
    if value is None or value == "":
        return kind(0)
    if isinstance(value, bool):
        raise SpecError(f"{where}{key} must be a number, not a boolean")
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise SpecError(
            f"{where}{key} must be a {'whole number' if kind is int else 'number'}, not {_shown(value)}"
        ) from None
    if number < 0:
        raise SpecError(f"{where}{key} must not be negative")
    if kind is int and number > INT32_MAX:
        raise SpecError(f"{where}{key} must be at most {INT32_MAX}, not {_shown(value)}")
    if kind is float and not math.isfinite(number):
        raise SpecError(f"{where}{key} must be a finite number, not {_shown(value)}")
    return number


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _list(body: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(f"{where}{key} must be a list, not {type(value).__name__}")
    return value


LB_FIELDS = {"lb_name", "server_port", "server_name", "lb_group", "lb_path", "lb_list"}


def lb_request(body: Any) -> tuple[str, nginx_pb2.ConfigLB]:
    """(target pod, ConfigLB) from an ``/nginx/lb`` body such as lbv2.yaml."""
    body = _mapping(body, "the lb spec")
    _check_keys(body, LB_FIELDS, "the lb spec")
    target = _text(body, "lb_name", "", required=True)
    urls = []
    for i, item in enumerate(_list(body, "lb_list", "")):
        item = _mapping(item, f"lb_list[{i}]")
        _check_keys(item, {"url"}, f"lb_list[{i}]")
        urls.append(_text(item, "url", f"lb_list[{i}].", required=True))
    if not urls:
        raise SpecError("lb_list must name at least one server ({url: host:port})")
    return target, nginx_pb2.ConfigLB(
        server_port=_text(body, "server_port", ""),
        server_name=_text(body, "server_name", ""),
        slb_list=urls,
        slb_group=_text(body, "lb_group", ""),
        lb_path=_text(body, "lb_path", ""),
    )


SERVER_FIELDS = {"server_name", "server_port", "site_root", "site_index", "upload_path_config", "upload_path_test",
                 "locations", "files"}  # fmt: skip
LOCATION_FIELDS = {"uri_match", "directive", "path", "response_size", "latency_ms", "status"}


def server_request(body: Any) -> tuple[str, nginx_pb2.ConfigServer]:
    """(target pod, ConfigServer) from an ``/nginx/server`` body such as server.yaml."""
    body = _mapping(body, "the server spec")
    _check_keys(body, SERVER_FIELDS, "the server spec")
    target = _text(body, "server_name", "", required=True)
    locations = []
    for i, item in enumerate(_list(body, "locations", "")):
        where = f"locations[{i}]."
        item = _mapping(item, f"locations[{i}]")
        _check_keys(item, LOCATION_FIELDS, f"locations[{i}]")
        locations.append(
            nginx_pb2.Location(
                uri_match=_text(item, "uri_match", where, required=True),
                directive=_text(item, "directive", where),
                path=_text(item, "path", where),
                response_size=_number(item, "response_size", where),
                latency_ms=_number(item, "latency_ms", where, float),
                status=_number(item, "status", where),
            )
        )
    files = []
    for i, item in enumerate(_list(body, "files", "")):
        where = f"files[{i}]."
        item = _mapping(item, f"files[{i}]")
        _check_keys(item, {"src_file", "dest_file"}, f"files[{i}]")
        files.append(
            nginx_pb2.File(
                src_file=_text(item, "src_file", where, required=True),
                dest_file=_text(item, "dest_file", where, required=True),
            )
        )
    return target, nginx_pb2.ConfigServer(
        server_port=_text(body, "server_port", ""),
        server_name=target,
        site_root=_text(body, "site_root", ""),
        site_index=_text(body, "site_index", ""),
        upload_path_config=_text(body, "upload_path_config", ""),
        upload_path_test=_text(body, "upload_path_test", ""),
        locations=locations,
        files=files,
    )


PROXY_FIELDS = {"server_name", "server_port", "location_path", "proxy_path", "mirror_path", "block_seconds"}


def proxy_request(body: Any) -> tuple[str, nginx_pb2.ConfigProxy]:
    """(target pod, ConfigProxy); ``server_name`` defaults to proxy-access-control."""
    body = _mapping(body, "the proxy spec")
    _check_keys(body, PROXY_FIELDS, "the proxy spec")
    target = _text(body, "server_name", "") or "proxy-access-control"
    return target, nginx_pb2.ConfigProxy(
        server_port=_text(body, "server_port", ""),
        server_name=target,
        location_path=_text(body, "location_path", ""),
        proxy_path=_text(body, "proxy_path", ""),
        mirror_path=_text(body, "mirror_path", ""),
        block_seconds=_number(body, "block_seconds", ""),
    )


RULE_FIELDS = {"protocol", "dest_port", "dest_ip", "src_port", "src_ip", "msg", "content", "sid", "rev", "rule"}


def rule_request(body: Any) -> snort_pb2.AddRule:
    """AddRule from a ``/snort/addrule`` body such as idsrule_scan.yaml (or ``{rule: <text>}``)."""
    body = _mapping(body, "the rule spec")
    _check_keys(body, RULE_FIELDS, "the rule spec")
    if _text(body, "rule", ""):
        extra = sorted(k for k in body if k != "rule")
        if extra:
            raise SpecError(f"rule is a whole rule; do not combine it with {', '.join(extra)}")
        return snort_pb2.AddRule(rule=_text(body, "rule", ""))
    for key in ("protocol", "msg", "sid"):
        _text(body, key, "", required=True)
    return snort_pb2.AddRule(**{key: _text(body, key, "") for key in RULE_FIELDS if key != "rule"})
