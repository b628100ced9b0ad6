"""``cloverctl create system clovisor`` / ``cloverctl delete system clovisor``: deploy Clovisor's
DaemonSet (namespace ``clovisor``, read-only RBAC) from ``k8s/clovisor``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import click

from cloverctl import system

SYSTEM = system.System("clovisor", ("namespace.yaml", "rbac.yaml", "daemonset.yaml"))


def load_manifests(
    image: str | None = None, env: Mapping[str, str] | None = None, tag: str | None = None
) -> list[dict[str, Any]]:
    """The documents to apply, in order; ``image``, ``tag`` and ``env`` change the DaemonSet's."""
    return system.load_manifests(
        SYSTEM, images={"clovisor": image} if image else None, tag=tag, env={"clovisor": env or {}}
    )


@click.command("clovisor")
@click.option("--image", default=None, help="Clovisor image (default: the manifest's).")
@click.option("--redis-url", default=None, help="Redis holding Clovisor's settings (CLOVER_REDIS_URL in the pods).")
@click.option("--kafka", "kafka_bootstrap", default=None, help="Kafka bootstrap servers for the spans.")
@system.create_options
def create_system_clovisor(image: str | None, redis_url: str | None, kafka_bootstrap: str | None, tag: str | None,
                           dry_run: bool, kubeconfig: str | None, context: str | None) -> None:  # fmt: skip
    """Deploy Clovisor: namespace clovisor, read-only RBAC, one pod per node.

    Redis's password comes from the Secret clover-redis (key password) in namespace clovisor:
    kubectl -n clovisor create secret generic clover-redis --from-file=password=FILE"""
    if redis_url and urlsplit(redis_url).password is not None:
        raise click.UsageError(
            "--redis-url must not carry the password: put it in the Secret clover-redis "
            "(kubectl -n clovisor create secret generic clover-redis --from-file=password=FILE)"
        )
    env = {k: v for k, v in (("CLOVER_REDIS_URL", redis_url), ("CLOVER_KAFKA_BOOTSTRAP", kafka_bootstrap)) if v}
    system.run_apply(load_manifests(image=image, env=env, tag=tag), kubeconfig, context, dry_run)


@click.command("clovisor")
@system.cluster_options
def delete_system_clovisor(kubeconfig: str | None, context: str | None) -> None:
    """Remove Clovisor (its pods remove their qdiscs as they stop)."""
    system.run_delete(load_manifests(), kubeconfig, context)


def register(verbs: Mapping[str, click.Group]) -> None:
    """Add ``create system clovisor`` and ``delete system clovisor`` to the CLI's verbs."""
    system.register(verbs, create_system_clovisor, delete_system_clovisor)
