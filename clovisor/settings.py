"""Clovisor's live configuration from Redis (docs/compatibility.md §3h), parsed into plain values.

Every reader here is a pure function over what Redis returned, so the rules (label filters,
egress matches, the pod-name prefix rule) are tested without a server. Malformed entries are
reported by name and skipped; they never stop Clovisor or hide the valid ones.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from clover import keys

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "default"


class SettingError(ValueError):
    """An entry of a Clovisor Redis key cannot be used; the message names key and entry."""


@dataclass(frozen=True)
class LabelFilter:
    """``namespace[:label-key:label-value]``: pods of a namespace, optionally with one label."""

    namespace: str
    key: str | None = None
    value: str | None = None

    def matches(self, namespace: str, labels: Mapping[str, str]) -> bool:
        if namespace != self.namespace:
            return False
        return self.key is None or labels.get(self.key) == self.value


@dataclass(frozen=True)
class EgressRule:
    """``<ip or 0>:<tcp port>[:<pod name prefix>]``: outbound traffic to trace."""

    ip: str  # "0" = any address
    port: int
    pod_prefix: str = ""

    def applies_to(self, pod_name: str) -> bool:
        """The docs' rule: no prefix = every pod; else pods whose name starts with it."""
        return not self.pod_prefix or pod_name.startswith(self.pod_prefix)


@dataclass(frozen=True)
class Settings:
    """One snapshot of Clovisor's Redis configuration."""

    labels: tuple[LabelFilter, ...] = (LabelFilter(DEFAULT_NAMESPACE),)
    egress: tuple[EgressRule, ...] = ()
    jaeger_collector: str | None = None
    jaeger_agent: str | None = None
    proto_cfg: Mapping[str, str] = field(default_factory=dict)
    errors: tuple[str, ...] = ()

    def selects(self, namespace: str, labels: Mapping[str, str]) -> bool:
        """Whether a pod is monitored: it matches any filter (filters are ORed)."""
        return any(f.matches(namespace, labels) for f in self.labels)

    @property
    def namespaces(self) -> frozenset[str]:
        return frozenset(f.namespace for f in self.labels)

    def egress_for(self, pod_name: str) -> list[EgressRule]:
        return [r for r in self.egress if r.applies_to(pod_name)]


def parse_label(entry: str) -> LabelFilter:
    parts = entry.strip().split(":")
    if len(parts) == 1 and parts[0]:
        return LabelFilter(parts[0])
    if len(parts) == 3 and all(parts):
        return LabelFilter(parts[0], parts[1], parts[2])
    raise SettingError(f"{keys.CLOVISOR_LABELS} entry {entry!r} must be <namespace> or <namespace>:<key>:<value>")


def parse_labels(entries: Iterable[str]) -> tuple[tuple[LabelFilter, ...], list[str]]:
    """Filters from the list; an empty list means the ``default`` namespace."""
    filters, errors = [], []
    for entry in entries:
        try:
            filters.append(parse_label(entry))
        except SettingError as exc:
            errors.append(str(exc))
    if not filters and not errors:
        filters = [LabelFilter(DEFAULT_NAMESPACE)]
    return tuple(dict.fromkeys(filters)), errors


def parse_egress_rule(entry: str, key: str = keys.CLOVISOR_EGRESS_MATCH) -> EgressRule:
    parts = entry.strip().split(":")
    if len(parts) not in (2, 3):
        raise SettingError(f"{key} entry {entry!r} must be <ip or 0>:<port>[:<pod name prefix>]")
    ip, port_text = parts[0], parts[1]
    if ip != "0":
        try:
            if ipaddress.ip_address(ip).version != 4:
                raise SettingError(f"{key} entry {entry!r}: only IPv4 addresses are traced")
        except ValueError:
            raise SettingError(f"{key} entry {entry!r}: {ip!r} is not an IP address or 0") from None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SettingError(f"{key} entry {entry!r}: port {port_text!r} is not a TCP port")
    return EgressRule(ip, int(port_text), parts[2] if len(parts) == 3 else "")


def parse_egress(entries_by_key: Mapping[str, Iterable[str]]) -> tuple[tuple[EgressRule, ...], list[str]]:
    rules, errors = [], []
    for key, entries in entries_by_key.items():
        for entry in entries:
            try:
                rules.append(parse_egress_rule(entry, key))
            except SettingError as exc:
                errors.append(str(exc))
    return tuple(dict.fromkeys(rules)), errors


def parse_endpoint(value: str | None, key: str) -> tuple[str | None, list[str]]:
    if not value:
        return None, []
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None, [f"{key}={value!r} must look like host:port"]
    return value, []


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read(client: redis.Redis) -> Settings:
    """Read every Clovisor key from a redis-py client (one round trip)."""
    pipe = client.pipeline(transaction=False)
    pipe.lrange(keys.CLOVISOR_LABELS, 0, -1)
    pipe.lrange(keys.CLOVISOR_EGRESS_MATCH, 0, -1)
    pipe.lrange(keys.CLOVISOR_EGRESS_MATCH_ORIGINAL, 0, -1)
    pipe.get(keys.CLOVISOR_JAEGER_COLLECTOR)
    pipe.get(keys.CLOVISOR_JAEGER_AGENT)
    pipe.hgetall(keys.CLOVISOR_PROTO_CFG)
    labels_raw, egress_raw, egress_orig_raw, collector, agent, proto = pipe.execute()
    return build(
        [_text(x) for x in labels_raw],
        {
            keys.CLOVISOR_EGRESS_MATCH: [_text(x) for x in egress_raw],
            keys.CLOVISOR_EGRESS_MATCH_ORIGINAL: [_text(x) for x in egress_orig_raw],
        },
        _text(collector) if collector else None,
        _text(agent) if agent else None,
        {_text(k): _text(v) for k, v in proto.items()},
    )


def build(
    labels: Iterable[str],
    egress: Mapping[str, Iterable[str]],
    collector: str | None = None,
    agent: str | None = None,
    proto_cfg: Mapping[str, str] | None = None,
) -> Settings:
    filters, errors = parse_labels(labels)
    rules, egress_errors = parse_egress(egress)
    collector, e1 = parse_endpoint(collector, keys.CLOVISOR_JAEGER_COLLECTOR)
    agent, e2 = parse_endpoint(agent, keys.CLOVISOR_JAEGER_AGENT)
    all_errors = tuple(errors + egress_errors + e1 + e2)
    for message in all_errors:
        log.warning("ignored: %s", message)
    return Settings(filters, rules, collector, agent, dict(proto_cfg or {}), all_errors)
