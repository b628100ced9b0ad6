"""``cloverctl create system validation`` / ``cloverctl delete system validation``: the JMeter
master (the validation service, gRPC 50054) and three JMeter slave pods, with their Services,
from ``k8s/validation`` (namespace ``default`` as in the original)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from cloverctl import system

SYSTEM = system.System("validation", ("slave.yaml", "master.yaml"))
MASTER, SLAVE = "clover-jmeter-master", "clover-jmeter-slave"


def load_manifests(
    namespace: str | None = None,
    tag: str | None = None,
    master_image: str | None = None,
    slave_image: str | None = None,
) -> list[dict[str, Any]]:
    images = {name: image for name, image in ((MASTER, master_image), (SLAVE, slave_image)) if image}
    return system.load_manifests(SYSTEM, namespace=namespace, images=images, tag=tag)


namespace_option = click.option(
    "-n", "--namespace", default="default", show_default=True, help="Namespace (it must exist)."
)


@click.command("validation")
@namespace_option
@click.option("--master-image", default=None, help=f"Image of {MASTER} (default: the manifest's, with --tag).")
@click.option("--slave-image", default=None, help=f"Image of {SLAVE} (default: the manifest's, with --tag).")
@system.create_options
def create_system_validation(namespace: str, master_image: str | None, slave_image: str | None, tag: str | None,
                             dry_run: bool, kubeconfig: str | None, context: str | None) -> None:  # fmt: skip
    """Deploy JMeter validation: the master (validation service) and 3 slaves, with their Services."""
    docs = load_manifests(namespace, tag, master_image, slave_image)
    system.run_apply(docs, kubeconfig, context, dry_run)


@click.command("validation")
@namespace_option
@system.cluster_options
def delete_system_validation(namespace: str, kubeconfig: str | None, context: str | None) -> None:
    """Remove the JMeter master and slaves and their Services."""
    system.run_delete(load_manifests(namespace), kubeconfig, context)


def register(verbs: Mapping[str, click.Group]) -> None:
    """Add ``create system validation`` and ``delete system validation`` to the CLI's verbs."""
    system.register(verbs, create_system_validation, delete_system_validation)
