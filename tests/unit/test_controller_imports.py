"""The controller's and the dashboard's modules import each other without a cycle, counting the
imports inside functions: the dashboard reaches the controller's services and errors, never the
app, the REST routes or the server that mount it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("controller", "dashboard")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each module of PACKAGES and the modules of PACKAGES importing it runs."""
    files = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        targets.add(name.rpartition(".")[0])  # a module's package runs first
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, done = [], set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            found.append([*path[path.index(name) :], name])
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    return found


def reached_from(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    return seen


def test_no_module_of_the_controller_or_the_dashboard_imports_itself_round_a_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_dashboard_reaches_the_controllers_services_and_not_what_mounts_it() -> None:
    graph = import_graph()
    reached = set().union(*(reached_from(graph, m) for m in graph if m.startswith("dashboard")))
    assert {"controller.services.visibility", "controller.services.chain", "controller.errors"} <= reached
    assert not reached & {"controller.app", "controller.api", "controller.server"}
