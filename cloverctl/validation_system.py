"""``cloverctl create|delete system validation``: the JMeter master (the validation service, gRPC
50054) and three JMeter slave pods, with their Services, from ``k8s/validation`` in the namespace
``default`` as in the original (the controller's ``CLOVER_VALIDATION_GRPC`` names
``clover-jmeter-master.default``). ``start testplan -s N`` then drives N of the slave pods."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from cloverctl import clover_system, system

SYSTEM = system.System("validation", ("slave.yaml", "master.yaml"))
MASTER, SLAVE = "clover-jmeter-master", "clover-jmeter-slave"


def load_manifests(tag: str | None = None, repo: str | None = None) -> list[dict[str, Any]]:
    return clover_system.load(SYSTEM, tag=tag, repo=repo)


@click.command("validation")
@clover_system.create_options
def create_system_validation(repo: str | None, tag: str | None, dry_run: bool, wait: bool, timeout: float,
                             kubeconfig: str | None, context: str | None) -> None:  # fmt: skip
    """Deploy JMeter validation in namespace default: the master (validation service) and 3
    slaves, with their Services, and wait until they are ready."""
    clover_system.create(load_manifests(tag, repo), [], kubeconfig, context, dry_run, wait, timeout)


@click.command("validation")
@clover_system.common
def delete_system_validation(wait: bool, timeout: float, kubeconfig: str | None, context: str | None) -> None:
    """Remove the JMeter master and slaves and their Services, and wait until the pods are gone."""
    clover_system.remove(load_manifests(), [], kubeconfig, context, wait, timeout)


def register(verbs: Mapping[str, click.Group]) -> None:
    """Add ``create system validation`` and ``delete system validation`` to the CLI's verbs."""
    system.register(verbs, create_system_validation, delete_system_validation)
