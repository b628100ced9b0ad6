"""``cloverctl create|delete system gateway``: the WAF in front of the sample chain
(``k8s/gateway``): ``modsecurity-crs`` (Apache, ModSecurity 2 and the OWASP Core Rule Set) and
its Service in the namespace ``clover-gateway``, writing its alerts and audit log entries to the
datastore's Redis (the Secret ``clover-redis`` copied into ``clover-gateway``).

The chain's proxy asks it about each request only when told to: ``cloverctl create system sdc
--waf`` sets proxy-access-control's ``CLOVER_WAF=on`` (``CLOVER_WAF_ADDRESS`` is this system's
Service, ``CLOVER_WAF_FAILURE_MODE`` closed unless ``--waf-failure-mode open``); ``create system
sdc`` without it turns the check off again (the manifest's default)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from clover.config import WAF_CRS_MODES, WAF_FAILURE_MODES
from cloverctl import clover_system, system

SYSTEM = system.System("gateway", ("namespace.yaml", "modsecurity-crs.yaml"))
NAMESPACE = "clover-gateway"
WAF = "modsecurity-crs"
# Where the chain's proxy (namespace default) reaches the WAF: the Service's port 80.
WAF_ADDRESS = f"{WAF}.{NAMESPACE}:80"
# What the WAF uses in clover-system, by Service, and the system that deploys it.
NEEDS = {"redis": "datastore"}
# Redis's password, which the WAF pod reads in its own namespace.
COPIED_SECRETS = ("clover-redis",)
PROXY = "proxy-access-control"
PROXY_NAMESPACE = "default"


def waf_env(crs_mode: str | None = None, paranoia_level: int | None = None) -> dict[str, dict[str, str]]:
    """The WAF pod's settings that differ from the manifest's, by workload."""
    env = {}
    if crs_mode is not None:
        env["CLOVER_WAF_CRS_MODE"] = crs_mode
    if paranoia_level is not None:
        env["CLOVER_WAF_PARANOIA_LEVEL"] = str(paranoia_level)
    return {WAF: env}


def proxy_env(waf: bool, failure_mode: str = "closed") -> dict[str, dict[str, str]]:
    """proxy-access-control's WAF settings (``create system sdc [--waf]``): the check on or off,
    always this system's address and the failure mode, so a new ``create`` sets all three."""
    if failure_mode not in WAF_FAILURE_MODES:
        raise click.UsageError(f"--waf-failure-mode {failure_mode!r}: one of {', '.join(WAF_FAILURE_MODES)}")
    return {PROXY: {"CLOVER_WAF": "on" if waf else "off", "CLOVER_WAF_ADDRESS": WAF_ADDRESS,
                    "CLOVER_WAF_FAILURE_MODE": failure_mode}}  # fmt: skip


def load(tag: str | None = None, repo: str | None = None, crs_mode: str | None = None,
         paranoia_level: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The documents to apply, in order: the namespace, the Deployment and its Service."""
    return clover_system.load(SYSTEM, tag=tag, repo=repo, env=waf_env(crs_mode, paranoia_level))


def missing_waf(core: Any) -> str | None:
    """Why the chain's proxy could not reach the WAF (its Service is missing), or None."""
    from kubernetes.client.exceptions import ApiException

    try:
        core.read_namespaced_service(WAF, NAMESPACE)
    except ApiException as exc:
        if exc.status != 404:
            raise click.ClickException(f"reading Service/{WAF} of {NAMESPACE} failed: {system.describe(exc)}") from None
        return f"Service/{WAF} in {NAMESPACE} (cloverctl create system gateway)"
    return None


def proxy_checks(apps: Any) -> str | None:
    """proxy-access-control's ``CLOVER_WAF_FAILURE_MODE`` when it asks the WAF (``CLOVER_WAF=on``), else None."""
    from kubernetes.client.exceptions import ApiException

    try:
        live = apps.read_namespaced_deployment(PROXY, PROXY_NAMESPACE)
    except ApiException as exc:
        if exc.status != 404:
            raise click.ClickException(f"reading Deployment/{PROXY} failed: {system.describe(exc)}") from None
        return None
    env = {e.name: e.value for e in live.spec.template.spec.containers[0].env or []}
    if env.get("CLOVER_WAF") != "on":
        return None
    return env.get("CLOVER_WAF_FAILURE_MODE") or "closed"


@click.command("gateway")
@click.option("--crs-mode", type=click.Choice(WAF_CRS_MODES), default=None,
              help="The Core Rule Set's mode (CLOVER_WAF_CRS_MODE; default: the manifest's, anomaly).")  # fmt: skip
@click.option("--paranoia-level", type=click.IntRange(1, 4), default=None,
              help="The CRS paranoia level (CLOVER_WAF_PARANOIA_LEVEL; default: the manifest's, 1).")  # fmt: skip
@clover_system.create_options
def create_gateway(crs_mode: str | None, paranoia_level: int | None, repo: str | None, tag: str | None,
                   dry_run: bool, wait: bool, timeout: float, kubeconfig: str | None,
                   context: str | None) -> None:  # fmt: skip
    """Deploy the WAF in namespace clover-gateway: modsecurity-crs (Apache, ModSecurity 2, the
    OWASP CRS) behind the Service modsecurity-crs.clover-gateway:80. Needs the datastore (its
    Redis and the Secret clover-redis, copied into clover-gateway). The chain's proxy asks it
    about each request after `cloverctl create system sdc --waf`."""
    docs = load(tag, repo, crs_mode, paranoia_level)
    missing = clover_system.missing_needs(clover_system.connect(kubeconfig, context)["core"], NEEDS)
    needs = f"the WAF (gateway) needs, in {clover_system.NAMESPACE}: {'; '.join(missing)}"
    if missing and not dry_run:
        raise click.ClickException(needs)
    clover_system.create(docs, [], kubeconfig, context, dry_run, wait, timeout, copied_secrets=COPIED_SECRETS)
    if missing:
        click.echo(f"note: {needs}")
    if not dry_run and proxy_checks(clover_system.connect(kubeconfig, context)["apps"]) is None:
        click.echo(f"note: {PROXY} does not ask the WAF yet: cloverctl create system sdc --waf")


@click.command("gateway")
@clover_system.common
def delete_gateway(wait: bool, timeout: float, kubeconfig: str | None, context: str | None) -> None:
    """Remove modsecurity-crs, its Service and the copy of clover-redis from clover-gateway (the
    namespace stays, empty). A proxy still checking with it then refuses every request (fail
    closed) or lets every request in (fail open) until `cloverctl create system sdc` without --waf."""
    docs = [d for d in load() if d["kind"] != "Namespace"]
    clover_system.remove(docs, [], kubeconfig, context, wait, timeout, copied_secrets=COPIED_SECRETS)
    mode = proxy_checks(clover_system.connect(kubeconfig, context)["apps"])
    if mode is not None:
        what = "refuses every request (403)" if mode == "closed" else "lets every request in unchecked"
        click.echo(f"note: {PROXY} still asks the WAF (CLOVER_WAF=on, failure mode {mode}) and now {what}: "
                   "cloverctl create system sdc turns the check off")  # fmt: skip


def register(verbs: Mapping[str, click.Group]) -> None:
    """Add ``create system gateway`` and ``delete system gateway`` to the CLI's verbs."""
    system.register(verbs, create_gateway, delete_gateway)
