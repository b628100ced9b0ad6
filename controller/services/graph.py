"""The graph service: the mesh's caller -> callee edges the analytics publish (jobs/graph.py), and
its nodes with what they answered."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from clover import figures, keys
from controller.services.visibility import chosen_source


def _number(text: str | None) -> float:
    try:
        return float(text) if text is not None and text != keys.NOT_AVAILABLE else 0.0
    except ValueError:
        return 0.0


@dataclass
class Node:
    """A service (or a caller's address) and the requests it answered over its incoming edges."""

    name: str
    request_count: int = 0
    errors: int = 0
    request_rate: float = 0.0
    callers: list[str] = field(default_factory=list)
    callees: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "request_count": self.request_count,
            "errors": self.errors,
            "error_rate": round(self.errors / self.request_count, 4) if self.request_count else None,
            "request_rate": round(self.request_rate, 2),
            "callers": sorted(self.callers),
            "callees": sorted(self.callees),
        }


def graph_of(published: Mapping[str, str]) -> dict[str, Any]:
    """Nodes and edges from a graph hash (field "<caller> -> <callee>" -> the edge's JSON)."""
    edges: list[dict[str, Any]] = []
    nodes: dict[str, Node] = {}
    for member, text in sorted(published.items()):
        try:
            value = json.loads(text)
        except ValueError:
            continue
        caller, callee = keys.graph_edge_of_field(member)
        edge: dict[str, Any] = {"caller": caller, "callee": callee, **figures.by_json_name(value)}
        edge["urls"] = {url: figures.by_json_name(f) for url, f in sorted(value.get("urls", {}).items())}
        edge["status_codes"] = dict(value.get("status_codes", {}))
        edges.append(edge)
        source, target = nodes.setdefault(caller, Node(caller)), nodes.setdefault(callee, Node(callee))
        source.callees.append(callee)
        target.callers.append(caller)
        target.request_count += int(_number(edge["request_count"]))
        target.errors += int(_number(edge["errors"]))
        target.request_rate += _number(edge["request_rate"])
    return {"nodes": [nodes[name].as_json() for name in sorted(nodes)], "edges": edges}


class GraphService:
    def __init__(self, store: redis.Redis):
        self.store = store

    def graph(self, window: bool = False, source: str | None = None) -> dict[str, Any]:
        """The graph over the whole retention or the sliding window, as ``source`` measured it."""
        chosen = chosen_source(source)
        published: Mapping[str, str] = self.store.hgetall(keys.graph(window, chosen))  # type: ignore[assignment]  # a decoding client
        return {"window": window, "source": chosen, **graph_of(published)}
