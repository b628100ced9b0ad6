"""``cloverctl create|delete system monitoring``: the trace backend and Prometheus in
``clover-system`` (``k8s/monitoring``), where the original used Istio's add-ons: Jaeger
(Service ``jaeger``: OTLP 4317/4318, Thrift 14268 and 6831/udp, query 16686/16685) and
Prometheus (Service ``prometheus``: 9090), which scrapes the statistics port of the sample
chain's pods in namespace ``default``, found through the headless Service ``default/clover-stats``
(DNS service discovery: no access to the API). The collector (``k8s/collector``) reads both."""

from __future__ import annotations

from collections.abc import Mapping

import click

from cloverctl import clover_system, system

SYSTEM = system.System("monitoring", ("jaeger.yaml", "prometheus.yaml"))


@click.command("monitoring")
@clover_system.create_options
def create_monitoring(repo: str | None, tag: str | None, dry_run: bool, wait: bool, timeout: float,
                      kubeconfig: str | None, context: str | None) -> None:  # fmt: skip
    """Deploy the trace backend and Prometheus in clover-system (the original deployed Istio's
    Jaeger and Prometheus): jaeger.clover-system (OTLP gRPC 4317, OTLP HTTP 4318, Thrift HTTP
    14268, query and UI 16686) and prometheus.clover-system:9090, scraping Clover's pods of
    namespace default that have a port named stats (the headless Service clover-stats there).
    To use existing ones instead, set
    CLOVER_JAEGER_URL and CLOVER_PROMETHEUS_URL of the collector (k8s/collector)."""
    clover_system.create(clover_system.load(SYSTEM, tag=tag, repo=repo), [], kubeconfig, context, dry_run, wait,
                         timeout)  # fmt: skip


@click.command("monitoring")
@clover_system.common
def delete_monitoring(wait: bool, timeout: float, kubeconfig: str | None, context: str | None) -> None:
    """Remove Jaeger (and its traces), Prometheus (and its series) and the Service default/clover-stats."""
    clover_system.remove(clover_system.load(SYSTEM), [], kubeconfig, context, wait, timeout)


def register(verbs: Mapping[str, click.Group]) -> None:
    """Add ``create system monitoring`` and ``delete system monitoring`` to the CLI's verbs."""
    system.register(verbs, create_monitoring, delete_monitoring)
