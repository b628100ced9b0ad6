"""The ``clovisor`` command: run the tracer (as root), show its status, clean up after it."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import click

from clover.config import Config
from clovisor.datapath import Limits
from clovisor.discovery import Source

CPU_PRIORITIES = {"normal": None, "batch": (os.SCHED_BATCH, 19), "idle": (os.SCHED_IDLE, 19)}


def set_cpu_priority(name: str) -> None:
    """Scheduling policy and nice value of the calling thread (and of the threads it starts);
    'normal' leaves them as the process was started."""
    setting = CPU_PRIORITIES[name]
    if setting is None:
        return
    policy, nice = setting
    os.sched_setscheduler(0, policy, os.sched_param(0))
    os.setpriority(os.PRIO_PROCESS, 0, nice)


def status_path(cfg: Config) -> Path:
    return cfg.state_dir / "clovisor" / "status.json"


# A running agent rewrites its status every AgentOptions.status_interval (2 s).
STALE_STATUS_SECONDS = 10.0


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Clovisor: per-session HTTP tracing of pods with eBPF (tc programs on their veths)."""


@main.command()
@click.option(
    "--discovery",
    type=click.Choice(["local", "kubernetes"]),
    default=None,
    help="Where pods come from (default: kubernetes inside a cluster, else local).",
)
@click.option("--node", default=None, help="Node name (default: $MY_NODE_NAME or the host name).")
@click.option("--netns-pattern", default=None, help="Also trace named network namespaces matching this glob.")
@click.option(
    "--exchange-timeout",
    type=click.FloatRange(0.1),
    default=30.0,
    show_default=True,
    help="Seconds before an exchange without a complete response is evicted (and counted).",
)
@click.option("--idle-connection-timeout", type=click.FloatRange(1), default=300.0, show_default=True)
@click.option("--max-connections", type=click.IntRange(16), default=16384, show_default=True)
@click.option("--max-exchanges", type=click.IntRange(16), default=8192, show_default=True)
@click.option(
    "--max-spans-per-second",
    type=click.IntRange(0),
    default=Limits.spans_per_second,
    show_default=True,
    help="Spans emitted per second at most (0: no limit); the kernel counts the others as over_budget, "
    "so the agent's CPU stays bounded when the node is overloaded.",
)
@click.option("--ring-mib", type=click.Choice(["1", "2", "4", "8", "16", "32", "64"]), default="8", show_default=True)
@click.option(
    "--kafka-buffer",
    type=click.IntRange(1000),
    default=100_000,
    show_default=True,
    help="Spans kept in memory while Kafka is unreachable.",
)
@click.option(
    "--kafka-buffer-mib",
    type=click.IntRange(1, 4096),
    default=48,
    show_default=True,
    help="...and MiB of them, whichever bound comes first (the DaemonSet's 256Mi memory limit holds "
    "the agent, ~150 MB, and this buffer plus ~35%). Spans beyond it are counted as kafka_buffer_full drops.",
)
@click.option("--export-incomplete", is_flag=True, help="Also export requests whose connection closed unanswered.")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Prometheus /metrics port (default CLOVER_CLOVISOR_METRICS_PORT; 0 disables).",
)
@click.option(
    "--cpu-priority",
    type=click.Choice(list(CPU_PRIORITIES)),
    default="normal",
    show_default=True,
    help="Scheduling of the agent's threads: 'idle' runs them only on otherwise idle CPUs (a busy node "
    "can starve it entirely); 'batch' is nice 19 (but a running batch task keeps its time slice when "
    "a workload wakes up, which lengthened the workload's tail latency in bench/clovisor); 'normal' "
    "competes equally. Records the agent cannot keep up with are counted as ring_buffer_full drops.",
)
@click.option("-v", "--verbose", is_flag=True)
def run(discovery: str | None, node: str | None, netns_pattern: str | None, exchange_timeout: float,
        idle_connection_timeout: float, max_connections: int, max_exchanges: int, max_spans_per_second: int,
        ring_mib: str, kafka_buffer: int, kafka_buffer_mib: int, export_incomplete: bool, metrics_port: int | None,
        cpu_priority: str, verbose: bool) -> None:  # fmt: skip
    """Trace the pods of this node until SIGTERM or SIGINT, then remove every qdisc it added."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    if os.geteuid() != 0:
        raise click.ClickException("Clovisor loads BPF programs and changes qdiscs: run it as root")
    set_cpu_priority(cpu_priority)  # before any thread starts: they inherit it
    from clovisor.agent import Clovisor, Options
    from clovisor.discovery.local import LocalSource

    cfg = Config.from_env()
    if discovery is None:
        discovery = "kubernetes" if os.environ.get("KUBERNETES_SERVICE_HOST") else "local"
    options = Options(
        exchange_timeout=exchange_timeout,
        idle_connection_timeout=idle_connection_timeout,
        limits=Limits(max_connections, max_exchanges, int(ring_mib) << 20, spans_per_second=max_spans_per_second),
        kafka_buffer_spans=kafka_buffer,
        kafka_buffer_mib=kafka_buffer_mib,
        export_incomplete=export_incomplete,
        status_file=status_path(cfg),
        metrics_port=cfg.clovisor_metrics_port if metrics_port is None else (metrics_port or None),
    )
    if node:
        options = replace(options, node=node)
    if discovery == "kubernetes":
        from clovisor.discovery.kube import KubeSource

        sources: list[Source] = [KubeSource(options.node)]
    else:
        sources = [LocalSource(cfg, netns_pattern)]
    agent = Clovisor(cfg, sources, options)
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    click.echo(f"clovisor: tracing on node {options.node} ({discovery} discovery); SIGTERM stops", err=True)
    try:
        agent.run()
    finally:
        agent.close()
        click.echo("clovisor: stopped, qdiscs removed", err=True)


@main.command()
def status() -> None:
    """Print the running Clovisor's status (pods, counters, drops, exporters) as JSON."""
    path = status_path(Config.from_env())
    if not path.exists():
        raise click.ClickException(f"no status at {path}: is clovisor running?")
    age = time.time() - path.stat().st_mtime
    if age > STALE_STATUS_SECONDS:
        raise click.ClickException(
            f"the status at {path} was written {age:.0f} s ago and a running clovisor rewrites it every few "
            "seconds: clovisor is not running"
        )
    click.echo(json.dumps(json.loads(path.read_text()), indent=2, sort_keys=True))


@main.command()
def cleanup() -> None:
    """Remove Clovisor's filters and the clsact qdiscs that hold only them (after a SIGKILL)."""
    from pyroute2 import IPRoute

    from clovisor import tc

    with IPRoute() as ipr:
        cleaned = tc.clean_stale(ipr)
    click.echo("cleaned: " + (", ".join(cleaned) if cleaned else "nothing to clean"))


if __name__ == "__main__":
    sys.exit(main())
