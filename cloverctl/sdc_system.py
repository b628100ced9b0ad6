"""``cloverctl create|delete system sdc``: the original's sample service chain as pods in the
namespace ``default`` (``k8s/sdc``): proxy-access-control, http-lb v1 and v2 (behind the headless
Service ``http-lb``, and ``http-lb-v1``/``http-lb-v2`` for one version each), clover-server1..5
and snort-ids, each a Deployment and a Service. The pods find each other by Service name, the
proxy copies every request to snort-ids, the IDS writes its alerts to the datastore's Redis, and
the controller (``CLOVER_SDC_NAMESPACE=default``) reconfigures them over gRPC. Spans go to the
trace backend ``jaeger.clover-system`` when there is one (``cloverctl create system monitoring``)."""

from __future__ import annotations

from collections.abc import Mapping

import click

from cloverctl import clover_system, system

SYSTEM = system.System("sdc", ("servers.yaml", "lb.yaml", "snort-ids.yaml", "proxy.yaml"))
# What the chain uses in clover-system, by Service, and the system that deploys it.
NEEDS = {"redis": "datastore"}
# Redis's password, which the proxy and the IDS read in their own namespace.
COPIED_SECRETS = ("clover-redis",)


@click.command("sdc")
@clover_system.create_options
def create_sdc(repo: str | None, tag: str | None, dry_run: bool, wait: bool, timeout: float,
               kubeconfig: str | None, context: str | None) -> None:  # fmt: skip
    """Deploy the sample chain in namespace default: proxy-access-control, http-lb v1/v2,
    clover-server1..5 and snort-ids. Needs the datastore (its Redis and the Secret clover-redis,
    copied into default)."""
    docs = clover_system.load(SYSTEM, tag=tag, repo=repo)
    missing = clover_system.missing_needs(clover_system.connect(kubeconfig, context)["core"], NEEDS)
    needs = f"the sample chain needs, in {clover_system.NAMESPACE}: {'; '.join(missing)}"
    if missing and not dry_run:
        raise click.ClickException(needs)
    clover_system.create(docs, [], kubeconfig, context, dry_run, wait, timeout, copied_secrets=COPIED_SECRETS)
    if missing:
        click.echo(f"note: {needs}")


@click.command("sdc")
@clover_system.common
def delete_sdc(wait: bool, timeout: float, kubeconfig: str | None, context: str | None) -> None:
    """Remove the sample chain's Deployments and Services and the copy of clover-redis from default."""
    clover_system.remove(clover_system.load(SYSTEM), [], kubeconfig, context, wait, timeout,
                         copied_secrets=COPIED_SECRETS)  # fmt: skip


def register(verbs: Mapping[str, click.Group]) -> None:
    """Add ``create system sdc`` and ``delete system sdc`` to the CLI's verbs."""
    system.register(verbs, create_sdc, delete_sdc)
