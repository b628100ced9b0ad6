"""Where Clovisor learns which pods to trace: the local pod registry and network namespaces,
or the Kubernetes API. Every source returns ``PodTarget``s for the current settings."""

from __future__ import annotations

from typing import Protocol

from clovisor.settings import Settings
from clovisor.targets import PodTarget


class Source(Protocol):
    name: str

    def targets(self, settings: Settings, plugin_protocols: frozenset[str]) -> list[PodTarget]: ...

    def changed(self) -> bool:
        """Whether something changed since the last call to ``targets`` (for watch-based sources)."""
        ...

    def close(self) -> None: ...
