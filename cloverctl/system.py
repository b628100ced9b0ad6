"""``cloverctl create|delete system <name>``: apply or remove a system's manifests (``k8s/<name>``)
with the Kubernetes client. The systems themselves (clovisor, validation) are data: a
:class:`System` and their command options; everything else is here."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

K8S_DIR = Path(__file__).resolve().parent.parent / "k8s"


@dataclass(frozen=True)
class System:
    """A deployable system: its manifest files under ``k8s/<name>``, applied in this order."""

    name: str
    files: tuple[str, ...]

    @property
    def directory(self) -> Path:
        return K8S_DIR / self.name


@dataclass(frozen=True)
class Kind:
    """How to create, update and delete one kind of object with the typed client. ``update`` is
    a replace, or a patch for kinds the API server will not replace without their live fields
    (a Service's clusterIP and resourceVersion)."""

    api: str  # "core", "rbac" or "apps"
    create: str
    update: str
    delete: str
    namespaced: bool


KINDS = {
    "Namespace": Kind("core", "create_namespace", "patch_namespace", "delete_namespace", False),
    "ServiceAccount": Kind(
        "core", "create_namespaced_service_account", "patch_namespaced_service_account",
        "delete_namespaced_service_account", True,
    ),
    "ConfigMap": Kind(
        "core", "create_namespaced_config_map", "replace_namespaced_config_map", "delete_namespaced_config_map", True
    ),
    "Service": Kind(
        "core", "create_namespaced_service", "patch_namespaced_service", "delete_namespaced_service", True
    ),
    "Role": Kind("rbac", "create_namespaced_role", "replace_namespaced_role", "delete_namespaced_role", True),
    "RoleBinding": Kind(
        "rbac", "create_namespaced_role_binding", "replace_namespaced_role_binding", "delete_namespaced_role_binding",
        True,
    ),
    "ClusterRole": Kind("rbac", "create_cluster_role", "replace_cluster_role", "delete_cluster_role", False),
    "ClusterRoleBinding": Kind(
        "rbac", "create_cluster_role_binding", "replace_cluster_role_binding", "delete_cluster_role_binding", False
    ),
    "DaemonSet": Kind(
        "apps", "create_namespaced_daemon_set", "replace_namespaced_daemon_set", "delete_namespaced_daemon_set", True
    ),
    "Deployment": Kind(
        "apps", "create_namespaced_deployment", "replace_namespaced_deployment", "delete_namespaced_deployment", True
    ),
    "StatefulSet": Kind(
        "apps", "create_namespaced_stateful_set", "patch_namespaced_stateful_set", "delete_namespaced_stateful_set",
        True,
    ),
}  # fmt: skip

WORKLOADS = ("DaemonSet", "Deployment", "StatefulSet")


def with_tag(image: str, tag: str) -> str:
    """``image`` with its tag replaced (or added): ``reg:5000/a/b:1`` -> ``reg:5000/a/b:<tag>``."""
    name, sep, old = image.rpartition(":")
    return f"{name if sep and '/' not in old else image}:{tag}"


def _set_env(container: dict[str, Any], env: Mapping[str, str]) -> None:
    entries = container.setdefault("env", [])
    for key, value in env.items():
        for entry in entries:
            if entry["name"] == key:
                entry.pop("valueFrom", None)
                entry["value"] = value
                break
        else:
            entries.append({"name": key, "value": value})


def load_manifests(
    system: System,
    *,
    namespace: str | None = None,
    images: Mapping[str, str] | None = None,
    tag: str | None = None,
    env: Mapping[str, Mapping[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """The documents to apply, in order. ``namespace`` moves every namespaced object; ``images``
    and ``env`` are keyed by workload (DaemonSet or Deployment) name and change its first
    container; ``tag`` changes the tag of every image ``images`` does not set."""
    docs: list[dict[str, Any]] = []
    for name in system.files:
        path = system.directory / name
        try:
            loaded = [d for d in yaml.safe_load_all(path.read_text()) if d]
        except yaml.YAMLError as exc:
            raise click.ClickException(f"{path}: not valid YAML: {exc}") from None
        for doc in loaded:
            if not isinstance(doc, dict) or "kind" not in doc or "metadata" not in doc:
                raise click.ClickException(f"{path}: every document needs kind and metadata")
            docs.append(doc)
    for doc in docs:
        kind = KINDS.get(doc["kind"])
        if namespace and kind is not None and kind.namespaced:
            doc["metadata"]["namespace"] = namespace
        if doc["kind"] not in WORKLOADS:
            continue
        name = doc["metadata"]["name"]
        container = doc["spec"]["template"]["spec"]["containers"][0]
        if images and name in images:
            container["image"] = images[name]
        elif tag:
            container["image"] = with_tag(container["image"], tag)
        _set_env(container, (env or {}).get(name, {}))
    return docs


def describe(exc: Any) -> str:
    """An ApiException as one line: status, reason, the API server's message; a 403 says it is RBAC."""
    import json

    try:
        message = json.loads(exc.body or "{}").get("message", "")
    except (ValueError, AttributeError):
        message = ""
    text = f"{exc.status} {exc.reason}" + (f": {message}" if message else "")
    if exc.status == 403:
        text += " (missing RBAC: the kubeconfig's user needs a Role or ClusterRole allowing this)"
    return text


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

    docs = list(docs)
    for doc in docs:
        if doc["kind"] not in KINDS:
            raise click.ClickException(f"kind {doc['kind']!r} is not one cloverctl can apply")
    extra = {"dry_run": "All"} if dry_run else {}
    lines = []
    for doc in docs:
        kind = KINDS[doc["kind"]]
        name = doc["metadata"]["name"]
        try:
            _call(apis, kind, kind.create, doc, True, **extra)
            lines.append(f"{doc['kind']}/{name} created")
        except ApiException as exc:
            if exc.status != 409:
                raise click.ClickException(f"creating {doc['kind']}/{name} failed: {describe(exc)}") from None
            _call(apis, kind, kind.update, doc, True, **extra)
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
                raise click.ClickException(f"deleting {doc['kind']}/{name} failed: {describe(exc)}") from None
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


def cluster_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--kubeconfig`` and ``--context``, for create and delete."""
    fn = click.option("--context", default=None, help="kubeconfig context to use.")(fn)
    return click.option(
        "--kubeconfig", default=None, help="Path of the kubeconfig (default: in-cluster, then ~/.kube/config)."
    )(fn)


def create_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The cluster options, ``-t/--tag`` and ``--dry-run``, for create."""
    fn = cluster_options(fn)
    fn = click.option("--dry-run", is_flag=True, help="Ask the API server to validate only (dryRun=All).")(fn)
    return click.option("-t", "--tag", default=None, help="Image tag for every image (default: the manifests').")(fn)


def run_apply(docs: list[dict[str, Any]], kubeconfig: str | None, context: str | None, dry_run: bool) -> None:
    for line in apply(cluster_apis(kubeconfig, context), docs, dry_run):
        click.echo(line)


def run_delete(docs: list[dict[str, Any]], kubeconfig: str | None, context: str | None) -> None:
    for line in delete(cluster_apis(kubeconfig, context), docs):
        click.echo(line)


def _system_group(verb: click.Group, summary: str) -> click.Group:
    existing = verb.commands.get("system")
    if isinstance(existing, click.Group):
        return existing
    group = click.Group("system", help=summary)
    verb.add_command(group)
    return group


def register(verbs: Mapping[str, click.Group], create: click.Command, delete: click.Command) -> None:
    """Add ``create system <name>`` and ``delete system <name>`` to the CLI's verbs."""
    _system_group(verbs["create"], "Deploy Clover's system components to a cluster.").add_command(create)
    _system_group(verbs["delete"], "Remove Clover's system components from a cluster.").add_command(delete)
