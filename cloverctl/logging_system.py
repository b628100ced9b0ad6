"""``cloverctl create|delete system logging``: the log store and the log shipper in namespace
``logging`` (``k8s/logging``): VictoriaLogs (Service ``log-store``: 9428, where the controller's
CLOVER_LOG_STORE_URL points) and an OpenTelemetry Collector on every node reading the chain
pods' entries from the node's container logs (``/var/log/pods``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

import click

from cloverctl import clover_system, system

SYSTEM = system.System("logging", ("namespace.yaml", "log-store.yaml", "log-shipper.yaml"))
SHIPPER = "log-shipper"
POD_LOGS = "/var/log/pods"


def load_manifests(
    tag: str | None = None, repo: str | None = None, pod_logs_dir: str = POD_LOGS
) -> list[dict[str, Any]]:
    """The system's documents; the shipper reads the node's ``pod_logs_dir`` (the kubelet's podLogsDir)."""
    path = PurePosixPath(pod_logs_dir)
    if not path.is_absolute() or ".." in path.parts:
        raise click.BadParameter(f"{pod_logs_dir!r} is not an absolute path", param_hint="--pod-logs-dir")
    docs = clover_system.load(SYSTEM, tag=tag, repo=repo)
    shipper = next(d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == SHIPPER)
    volume = next(v for v in shipper["spec"]["template"]["spec"]["volumes"] if v["name"] == "pod-logs")
    volume["hostPath"]["path"] = str(path)
    return docs


@click.command("logging")
@click.option("--pod-logs-dir", default=POD_LOGS, show_default=True,
              help="The nodes' container logs (the kubelet's podLogsDir), which the shipper reads.")  # fmt: skip
@clover_system.create_options
def create_logging(pod_logs_dir: str, repo: str | None, tag: str | None, dry_run: bool, wait: bool, timeout: float,
                   kubeconfig: str | None, context: str | None) -> None:  # fmt: skip
    """Deploy the log store (log-store.logging:9428, entries on a 2 Gi claim, kept 7 days) and the
    log shipper (a DaemonSet reading the nodes' container logs) in namespace logging."""
    clover_system.create(load_manifests(tag, repo, pod_logs_dir), [], kubeconfig, context, dry_run, wait, timeout)


@click.command("logging")
@clover_system.common
def delete_logging(wait: bool, timeout: float, kubeconfig: str | None, context: str | None) -> None:
    """Remove the log shipper and the log store (its claim and entries go with the namespace)."""
    clover_system.remove(clover_system.load(SYSTEM), [], kubeconfig, context, wait, timeout)


def register(verbs: Mapping[str, click.Group]) -> None:
    """Add ``create system logging`` and ``delete system logging`` to the CLI's verbs."""
    system.register(verbs, create_logging, delete_logging)
