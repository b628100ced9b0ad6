"""What a running Clovisor reports: the status file ``clovisor status`` prints, and /metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from clovisor.datapath import Limits
from clovisor.export import ExportStats


@dataclass
class Counters:
    spans: int = 0
    incomplete: int = 0
    tcp_connections: int = 0
    unknown_interface: int = 0
    evicted_exchanges: int = 0
    evicted_connections: int = 0
    plugin_fields: int = 0
    redis_errors: int = 0


@dataclass(frozen=True)
class PodStatus:
    veth: str
    ip: str
    service: str
    ports: dict[int, str]


@dataclass(frozen=True)
class JaegerStatus:
    stats: ExportStats
    target: str


@dataclass(frozen=True)
class PluginStatus:
    loaded: list[str]
    errors: dict[str, str]
    failures: int
    refused: int
    directory: str


@dataclass(frozen=True)
class ProgramRunTime:
    """Run time of a BPF program (counted only while kernel.bpf_stats_enabled=1)."""

    run_time_ns: int
    run_cnt: int


@dataclass(frozen=True)
class AgentStatus:
    node: str
    pods: dict[str, PodStatus]
    kernel: dict[str, int]
    drops: dict[str, int]
    maps: dict[str, int]
    ring_pending_bytes: int
    limits: Limits
    counters: Counters
    span_encoder: str
    kafka: ExportStats
    jaeger: JaegerStatus | None
    plugins: PluginStatus
    settings_errors: list[str]
    bpf_programs: dict[str, ProgramRunTime]

    def to_json(self) -> dict[str, Any]:
        """As the status file holds it: each exporter's counts with Kafka's pending spans and Jaeger's target."""
        data = asdict(self)
        data["kafka"]["pending"] = self.kafka.pending
        if self.jaeger is not None:
            data["jaeger"] = asdict(self.jaeger.stats) | {"target": self.jaeger.target}
        return data
