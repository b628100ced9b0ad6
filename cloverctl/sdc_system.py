"""``cloverctl create|delete system sdc``: the original's sample service chain as pods in the
namespace ``default`` (``k8s/sdc``): proxy-access-control, http-lb v1 and v2 (behind the headless
Service ``http-lb``, and ``http-lb-v1``/``http-lb-v2`` for one version each), clover-server1..5
and snort-ids, each a Deployment and a Service. The pods find each other by Service name, the
proxy copies every request to snort-ids, the IDS writes its alerts to the datastore's Redis, and
the controller (``CLOVER_SDC_NAMESPACE=default``) reconfigures them over gRPC. Spans go to the
trace backend ``jaeger.clover-system`` when there is one (``cloverctl create system monitoring``).
With ``--waf`` the proxy asks the WAF of ``cloverctl create system gateway`` about each request
(``CLOVER_WAF=on``); without it the check is off (the manifest's default)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from clover.config import WAF_FAILURE_MODES
from cloverctl import clover_system, gateway_system, system

SYSTEM = system.System("sdc", ("servers.yaml", "lb.yaml", "snort-ids.yaml", "proxy.yaml"))
# What the chain uses in clover-system, by Service, and the system that deploys it.
NEEDS = {"redis": "datastore"}
# Redis's password, which the proxy and the IDS read in their own namespace.
COPIED_SECRETS = ("clover-redis",)


def load_manifests(tag: str | None = None, repo: str | None = None, waf: bool = False,
                   waf_failure_mode: str = "closed") -> list[dict[str, Any]]:  # fmt: skip
    """The chain's documents; ``waf`` turns proxy-access-control's check against the gateway's WAF on."""
    return clover_system.load(SYSTEM, tag=tag, repo=repo, env=gateway_system.proxy_env(waf, waf_failure_mode))


@click.command("sdc")
@click.option("--waf", is_flag=True, help="proxy-access-control asks the WAF (cloverctl create system gateway, "
              f"{gateway_system.WAF_ADDRESS}) about each request: CLOVER_WAF=on. Default: off.")  # fmt: skip
@click.option(
    "--waf-failure-mode",
    type=click.Choice(WAF_FAILURE_MODES),
    default="closed",
    show_default=True,
    help="With --waf, when the WAF does not answer: closed refuses the request (403), open lets it in.",
)
@clover_system.create_options
def create_sdc(waf: bool, waf_failure_mode: str, repo: str | None, tag: str | None, dry_run: bool, wait: bool,
               timeout: float, kubeconfig: str | None, context: str | None) -> None:  # fmt: skip
    """Deploy the sample chain in namespace default: proxy-access-control, http-lb v1/v2,
    clover-server1..5 and snort-ids. Needs the datastore (its Redis and the Secret clover-redis,
    copied into default); with --waf also the WAF (cloverctl create system gateway)."""
    docs = load_manifests(tag, repo, waf, waf_failure_mode)
    core = clover_system.connect(kubeconfig, context)["core"]
    missing = clover_system.missing_needs(core, NEEDS)
    needs = [f"the sample chain needs, in {clover_system.NAMESPACE}: {'; '.join(missing)}"] if missing else []
    if waf and (no_waf := gateway_system.missing_waf(core)):
        needs.append(f"--waf needs {no_waf}")
    if needs and not dry_run:
        raise click.ClickException(". ".join(needs))
    clover_system.create(docs, [], kubeconfig, context, dry_run, wait, timeout, copied_secrets=COPIED_SECRETS)
    for need in needs:
        click.echo(f"note: {need}")
    if waf and not dry_run:
        click.echo(f"{gateway_system.PROXY} asks the WAF at {gateway_system.WAF_ADDRESS} about each request "
                   f"(CLOVER_WAF=on, failure mode {waf_failure_mode})")  # fmt: skip


@click.command("sdc")
@clover_system.common
def delete_sdc(wait: bool, timeout: float, kubeconfig: str | None, context: str | None) -> None:
    """Remove the sample chain's Deployments and Services and the copy of clover-redis from default."""
    clover_system.remove(load_manifests(), [], kubeconfig, context, wait, timeout,
                         copied_secrets=COPIED_SECRETS)  # fmt: skip


def register(verbs: Mapping[str, click.Group]) -> None:
    """Add ``create system sdc`` and ``delete system sdc`` to the CLI's verbs."""
    system.register(verbs, create_sdc, delete_sdc)
