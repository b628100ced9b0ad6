"""``cloverctl create|delete system logging``: the log store and the log shipper in namespace
``logging`` (``k8s/logging``): VictoriaLogs (Service ``log-store``: 9428, where the controller's
CLOVER_LOG_STORE_URL points) and an OpenTelemetry Collector on every node reading the chain
pods' access logs from ``/var/log/clover/access-logs``."""

from __future__ import annotations

from collections.abc import Mapping

import click

from cloverctl import clover_system, system

SYSTEM = system.System("logging", ("namespace.yaml", "log-store.yaml", "log-shipper.yaml"))


@click.command("logging")
@clover_system.create_options
def create_logging(repo: str | None, tag: str | None, dry_run: bool, wait: bool, timeout: float,
                   kubeconfig: str | None, context: str | None) -> None:  # fmt: skip
    """Deploy the log store (log-store.logging:9428, entries on a 2 Gi claim, kept 7 days) and the
    log shipper (a DaemonSet) in namespace logging."""
    clover_system.create(clover_system.load(SYSTEM, tag=tag, repo=repo), [], kubeconfig, context, dry_run, wait,
                         timeout)  # fmt: skip


@click.command("logging")
@clover_system.common
def delete_logging(wait: bool, timeout: float, kubeconfig: str | None, context: str | None) -> None:
    """Remove the log shipper and the log store (its claim and entries go with the namespace)."""
    clover_system.remove(clover_system.load(SYSTEM), [], kubeconfig, context, wait, timeout)


def register(verbs: Mapping[str, click.Group]) -> None:
    """Add ``create system logging`` and ``delete system logging`` to the CLI's verbs."""
    system.register(verbs, create_logging, delete_logging)
