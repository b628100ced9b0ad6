"""``cloverctl create system clovisor`` / ``cloverctl delete system clovisor``: Clovisor's
DaemonSet (namespace ``clovisor``, read-only RBAC) from ``k8s/clovisor``, pointed at the
Services of ``clover-system`` (Redis, Kafka, Jaeger), with Redis's Secret copied into its
namespace, readiness waits and ``--dry-run`` (``cloverctl.clover_system``'s helpers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import click

from cloverctl import clover_system, system

SYSTEM = system.System("clovisor", ("namespace.yaml", "rbac.yaml", "daemonset.yaml"))
NAMESPACE = "clovisor"
# What Clovisor reads and writes, by Service of clover-system, and the system that deploys it.
NEEDS = {"redis": "datastore", "kafka": "kafka"}
COPIED_SECRETS = ("clover-redis",)


def load_manifests(image: str | None = None, env: Mapping[str, str] | None = None, tag: str | None = None,
                   repo: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The documents to apply, in order; ``image`` (else ``repo``/``tag``) and ``env`` change the DaemonSet's."""
    docs = clover_system.load(SYSTEM, tag=tag, repo=repo, env={"clovisor": env or {}})
    if image:
        docs[-1]["spec"]["template"]["spec"]["containers"][0]["image"] = image
    return docs


@click.command("clovisor")
@click.option("--redis-url", default=None,
              help="Redis holding Clovisor's settings (CLOVER_REDIS_URL in the pods; default "
              "redis://redis.clover-system:6379/0). Its password comes from the Secret clover-redis.")  # fmt: skip
@click.option("--kafka", "kafka_bootstrap", default=None,
              help="Kafka bootstrap servers for the spans (default kafka.clover-system:9092).")  # fmt: skip
@clover_system.create_options
def create_system_clovisor(redis_url: str | None, kafka_bootstrap: str | None, repo: str | None, tag: str | None,
                           dry_run: bool, wait: bool, timeout: float, kubeconfig: str | None,
                           context: str | None) -> None:  # fmt: skip
    """Deploy Clovisor: namespace clovisor, read-only RBAC, one pod per node, tracing the pods
    that clovisor_labels in Redis selects (namespace default when unset). Needs the datastore
    (Redis and its Secret clover-redis, copied into namespace clovisor) and Kafka; its spans
    also go to Jaeger (jaeger.clover-system:14268, cloverctl create system monitoring)."""
    if redis_url and urlsplit(redis_url).password is not None:
        raise click.UsageError(
            "--redis-url must not carry the password: put it in the Secret clover-redis of clover-system "
            "(cloverctl create system datastore makes it) or of namespace clovisor"
        )
    env = {k: v for k, v in (("CLOVER_REDIS_URL", redis_url), ("CLOVER_KAFKA_BOOTSTRAP", kafka_bootstrap)) if v}
    given = {"redis": redis_url, "kafka": kafka_bootstrap}
    needs = {service: deployed_by for service, deployed_by in NEEDS.items() if not given[service]}
    missing = clover_system.missing_needs(clover_system.connect(kubeconfig, context)["core"], needs)
    if missing and not dry_run:
        raise click.ClickException(f"Clovisor needs, in {clover_system.NAMESPACE}: {'; '.join(missing)}")
    docs = load_manifests(env=env, tag=tag, repo=repo)
    clover_system.create(docs, [], kubeconfig, context, dry_run, wait, timeout, copied_secrets=COPIED_SECRETS)


@click.command("clovisor")
@clover_system.common
def delete_system_clovisor(wait: bool, timeout: float, kubeconfig: str | None, context: str | None) -> None:
    """Remove Clovisor, its RBAC and namespace clovisor (with the copied Secret); its pods remove
    their programs and qdiscs as they stop."""
    clover_system.remove(load_manifests(), [], kubeconfig, context, wait, timeout)


def register(verbs: Mapping[str, click.Group]) -> None:
    """Add ``create system clovisor`` and ``delete system clovisor`` to the CLI's verbs."""
    system.register(verbs, create_system_clovisor, delete_system_clovisor)
