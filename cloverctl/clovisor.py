"""``cloverctl create system clovisor`` / ``cloverctl delete system clovisor``: deploy Clovisor's
DaemonSet (namespace ``clovisor``, read-only RBAC) from ``k8s/clovisor`` with the Kubernetes client."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

MANIFESTS = Path(__file__).resolve().parent.parent / "k8s" / "clovisor"
ORDER = ("namespace.yaml", "rbac.yaml", "daemonset.yaml")


def load_manifests(
    directory: Path = MANIFESTS, image: str | None = None, env: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """The documents to apply, in order; ``image`` and ``env`` override the DaemonSet's."""
    docs: list[dict[str, Any]] = []
    for name in ORDER:
        path = directory / name
        try:
            loaded = [d for d in yaml.safe_load_all(path.read_text()) if d]
        except yaml.YAMLError as exc:
            raise click.ClickException(f"{path}: not valid YAML: {exc}") from None
        for doc in loaded:
            if not isinstance(doc, dict) or "kind" not in doc or "metadata" not in doc:
                raise click.ClickException(f"{path}: every document needs kind and metadata")
            docs.append(doc)
    for doc in docs:
        if doc["kind"] == "DaemonSet":
            container = doc["spec"]["template"]["spec"]["containers"][0]
            if image:
                container["image"] = image
            for key, value in (env or {}).items():
                entries = container.setdefault("env", [])
                for entry in entries:
                    if entry["name"] == key:
                        entry.pop("valueFrom", None)
                        entry["value"] = value
                        break
                else:
                    entries.append({"name": key, "value": value})
    return docs


@dataclass(frozen=True)
class Kind:
    """How to create, replace and delete one kind of object with the typed client."""

    api: str  # "core", "rbac" or "apps"
    create: str
    replace: str
    delete: str
    namespaced: bool


KINDS = {
    "Namespace": Kind("core", "create_namespace", "patch_namespace", "delete_namespace", False),
    "ServiceAccount": Kind(
        "core", "create_namespaced_service_account", "patch_namespaced_service_account",
        "delete_namespaced_service_account", True,
    ),
    "ClusterRole": Kind("rbac", "create_cluster_role", "replace_cluster_role", "delete_cluster_role", False),
    "ClusterRoleBinding": Kind(
        "rbac", "create_cluster_role_binding", "replace_cluster_role_binding", "delete_cluster_role_binding", False
    ),
    "DaemonSet": Kind(
        "apps", "create_namespaced_daemon_set", "replace_namespaced_daemon_set", "delete_namespaced_daemon_set", True
    ),
}  # fmt: skip


def _call(apis: Mapping[str, Any], kind: Kind, method: str, doc: dict[str, Any], with_body: bool, **kwargs: Any) -> Any:
    fn: Callable[..., Any] = getattr(apis[kind.api], method)
    args: list[Any] = [doc["metadata"]["name"]] if not with_body or method != kind.create else []
    if kind.namespaced:
        args.append(doc["metadata"]["namespace"])
    if with_body:
        args.append(doc)
    return fn(*args, **kwargs)


def apply(apis: Mapping[str, Any], docs: Iterable[dict[str, Any]], dry_run: bool = False) -> list[str]:
    """Create each object, or update it when it exists (409). Returns one line per object."""
    from kubernetes.client.exceptions import ApiException

    extra = {"dry_run": "All"} if dry_run else {}
    lines = []
    for doc in docs:
        kind = KINDS.get(doc["kind"])
        if kind is None:
            raise click.ClickException(f"kind {doc['kind']!r} is not one cloverctl can apply")
        name = doc["metadata"]["name"]
        try:
            _call(apis, kind, kind.create, doc, True, **extra)
            lines.append(f"{doc['kind']}/{name} created")
        except ApiException as exc:
            if exc.status != 409:
                raise click.ClickException(f"creating {doc['kind']}/{name} failed: {exc.status} {exc.reason}") from None
            _call(apis, kind, kind.replace, doc, True, **extra)
            lines.append(f"{doc['kind']}/{name} configured")
    return lines


def delete(apis: Mapping[str, Any], docs: Iterable[dict[str, Any]]) -> list[str]:
    """Delete each object (in reverse order); already gone is fine."""
    from kubernetes.client.exceptions import ApiException

    lines = []
    for doc in reversed(list(docs)):
        kind = KINDS[doc["kind"]]
        name = doc["metadata"]["name"]
        try:
            _call(apis, kind, kind.delete, doc, False)
            lines.append(f"{doc['kind']}/{name} deleted")
        except ApiException as exc:
            if exc.status != 404:
                raise click.ClickException(f"deleting {doc['kind']}/{name} failed: {exc.status} {exc.reason}") from None
            lines.append(f"{doc['kind']}/{name} not found")
    return lines


def cluster_apis(kubeconfig: str | None, context: str | None) -> dict[str, Any]:
    from kubernetes import client, config

    try:
        if kubeconfig or context:
            config.load_kube_config(config_file=kubeconfig, context=context)
        else:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
    except (config.ConfigException, FileNotFoundError) as exc:
        raise click.ClickException(f"no Kubernetes cluster configured: {exc}") from None
    return {"core": client.CoreV1Api(), "rbac": client.RbacAuthorizationV1Api(), "apps": client.AppsV1Api()}


_cluster_options = [
    click.option(
        "--kubeconfig", default=None, help="Path of the kubeconfig (default: in-cluster, then ~/.kube/config)."
    ),
    click.option("--context", default=None, help="kubeconfig context to use."),
]


def _with_cluster(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_cluster_options):
        fn = option(fn)
    return fn


@click.command("clovisor")
@click.option("--image", default=None, help="Clovisor image (default: the manifest's).")
@click.option("--redis-url", default=None, help="Redis holding Clovisor's settings (CLOVER_REDIS_URL in the pods).")
@click.option("--kafka", "kafka_bootstrap", default=None, help="Kafka bootstrap servers for the spans.")
@click.option("--dry-run", is_flag=True, help="Ask the API server to validate only (dryRun=All).")
@_with_cluster
def create_system_clovisor(image: str | None, redis_url: str | None, kafka_bootstrap: str | None, dry_run: bool,
                           kubeconfig: str | None, context: str | None) -> None:  # fmt: skip
    """Deploy Clovisor: namespace clovisor, read-only RBAC, one pod per node."""
    env = {k: v for k, v in (("CLOVER_REDIS_URL", redis_url), ("CLOVER_KAFKA_BOOTSTRAP", kafka_bootstrap)) if v}
    docs = load_manifests(image=image, env=env)
    for line in apply(cluster_apis(kubeconfig, context), docs, dry_run):
        click.echo(line)


@click.command("clovisor")
@_with_cluster
def delete_system_clovisor(kubeconfig: str | None, context: str | None) -> None:
    """Remove Clovisor (its pods remove their qdiscs as they stop)."""
    for line in delete(cluster_apis(kubeconfig, context), load_manifests()):
        click.echo(line)


def _system_group(verb: click.Group, summary: str) -> click.Group:
    existing = verb.commands.get("system")
    if isinstance(existing, click.Group):
        return existing
    group = click.Group("system", help=summary)
    verb.add_command(group)
    return group


def register(verbs: Mapping[str, click.Group]) -> None:
    """Add ``create system clovisor`` and ``delete system clovisor`` to the CLI's verbs."""
    _system_group(verbs["create"], "Deploy Clover's system components to a cluster.").add_command(
        create_system_clovisor
    )
    _system_group(verbs["delete"], "Remove Clover's system components from a cluster.").add_command(
        delete_system_clovisor
    )
