"""``cloverctl create|delete system datastore|kafka|collector|controller [nodeport|lb]|visibility``
and ``cloverctl get services``: Clover's own systems in the namespace ``clover-system``
(``k8s/clover-system``, ``k8s/datastore``, ``k8s/kafka``, ``k8s/collector``, ``k8s/controller``,
``k8s/visibility``),
as the original's commands (docs/compatibility.md §7), with readiness waits, ``--dry-run`` and
named errors (no cluster, RBAC, a missing image).

``create`` applies the manifests (the namespace first), makes the Secrets a system needs when
they are missing (random values, never replaced: ``clover-redis`` for the datastore,
``clover-controller`` for the controller's API token), then waits until every workload it
applied is ready, printing progress. ``delete`` removes what ``create`` made and waits until
its pods and volume claims are gone; the namespace stays (other systems live in it).

The visibility system is the ingest and the analytics as Spark applications: each driver runs
in a pod of its own (the ingest a StatefulSet, its checkpoint on a volume claim; the analytics a
Deployment) in client mode as the service account ``clover-spark`` and makes its executor pods;
``create`` also waits until those run, ``delete`` until they are gone."""

from __future__ import annotations

import base64
import datetime
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from cloverctl import system

NAMESPACE = "clover-system"
NAMESPACE_SYSTEM = system.System("clover-system", ("namespace.yaml",))
DATASTORE = system.System("datastore", ("redis.yaml", "cassandra.yaml"))
CONTROLLER = system.System("controller", ("controller.yaml",))
KAFKA = system.System("kafka", ("kafka.yaml",))
COLLECTOR = system.System("collector", ("collector.yaml",))
VISIBILITY_RBAC = system.System("visibility", ("spark-rbac.yaml",))
VISIBILITY = system.System("visibility", ("visibility.yaml",))
# What the visibility system reads and writes, by Service, and the system that deploys it.
VISIBILITY_NEEDS = {"cassandra": "datastore", "redis": "datastore", "kafka": "kafka"}
EXECUTOR_INSTANCES = "spark.executor.instances"
EXECUTOR_LABEL = "spark.kubernetes.executor.label.app"
CONTROLLER_SERVICES = {
    "nodeport": system.System("controller/nodeport", ("service.yaml",)),
    "lb": system.System("controller/lb", ("service.yaml",)),
}
# Secrets made on create when missing: (name, key, what it is), per system.
SECRETS = {
    "datastore": [("clover-redis", "password", "Redis's password")],
    "controller": [("clover-controller", "token", "the controller's API token")],
}
IMAGE_ERRORS = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName")
CONFIG_ERRORS = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")
# The kubelet retries these by itself: its secret/configmap cache had not caught up with a new object yet.
TRANSIENT_CONFIG_MESSAGES = ("failed to sync secret cache", "failed to sync configmap cache")


def load(*systems: system.System, tag: str | None = None, repo: str | None = None,
         env: Mapping[str, Mapping[str, str]] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The systems' documents with ``tag``, ``repo`` and ``env`` (by workload name) applied."""
    docs: list[dict[str, Any]] = []
    for one in systems:
        docs += system.load_manifests(one, tag=tag, env=env)
    if repo:
        for doc in docs:
            if doc["kind"] in system.WORKLOADS:
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    container["image"] = f"{repo.rstrip('/')}/{container['image'].rsplit('/', 1)[-1]}"
    return docs


def _conf_index(doc: dict[str, Any], key: str) -> int | None:
    """Where ``--conf key=...`` is in the Spark job's container arguments (the value's index)."""
    args = doc["spec"]["template"]["spec"]["containers"][0].get("args") or []
    for i, arg in enumerate(args):
        if arg.startswith(f"{key}=") and i > 0 and args[i - 1] == "--conf":
            return i
    return None


def spark_conf(doc: dict[str, Any], key: str) -> str | None:
    """The value of ``--conf key=...`` in a Spark job's workload, or None."""
    at = _conf_index(doc, key)
    return None if at is None else doc["spec"]["template"]["spec"]["containers"][0]["args"][at].split("=", 1)[1]


def set_executors(docs: list[dict[str, Any]], instances: int) -> None:
    """``spark.executor.instances`` of every Spark job in ``docs``: its number of executor pods."""
    if instances < 1:
        raise click.ClickException(f"--executors {instances}: a job needs at least one executor")
    for doc in docs:
        if doc["kind"] not in system.WORKLOADS:
            continue
        at = _conf_index(doc, EXECUTOR_INSTANCES)
        if at is None:
            raise click.ClickException(f"{doc['kind']}/{doc['metadata']['name']}: its arguments have no "
                                       f"--conf {EXECUTOR_INSTANCES}=N to change")  # fmt: skip
        doc["spec"]["template"]["spec"]["containers"][0]["args"][at] = f"{EXECUTOR_INSTANCES}={instances}"


def executor_selector(doc: dict[str, Any]) -> str:
    """The label selector of a Spark job's executor pods (the label its driver gives them)."""
    label = spark_conf(doc, EXECUTOR_LABEL)
    if not label:
        raise click.ClickException(f"{doc['kind']}/{doc['metadata']['name']}: its arguments have no "
                                   f"--conf {EXECUTOR_LABEL}=<name> for its executor pods")  # fmt: skip
    return f"spark-role=executor,app={label}"


def connect(kubeconfig: str | None, context: str | None) -> dict[str, Any]:
    """The API clients, after checking that the API server answers (a clear error otherwise)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    apis = system.cluster_apis(kubeconfig, context)
    api_client = apis["core"].api_client
    host = api_client.configuration.host
    api_client.configuration.retries = 1
    try:
        client.VersionApi(api_client).get_code(_request_timeout=10)
    except ApiException as exc:
        raise click.ClickException(f"the Kubernetes API server at {host} refused cloverctl: "
                                   f"{system.describe(exc)}") from None  # fmt: skip
    except (HTTPError, OSError) as exc:
        raise click.ClickException(
            f"no Kubernetes cluster answers at {host} ({type(exc).__name__}). Start one "
            "(cloverctl local up cluster) or point --kubeconfig / KUBECONFIG at yours."
        ) from None
    return apis


def ensure_secrets(core: Any, names: list[tuple[str, str, str]], dry_run: bool) -> list[str]:
    """Create each Secret (one key, a random value) unless it exists; never replace one."""
    from kubernetes.client.exceptions import ApiException

    lines = []
    for name, key, about in names:
        try:
            core.read_namespaced_secret(name, NAMESPACE)
            lines.append(f"Secret/{name} kept ({about})")
            continue
        except ApiException as exc:
            if exc.status != 404:
                raise click.ClickException(f"reading Secret/{name} failed: {system.describe(exc)}") from None
        value = base64.b64encode(secrets.token_hex(24).encode()).decode()
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "clover"}},
                "data": {key: value}}  # fmt: skip
        try:
            core.create_namespaced_secret(NAMESPACE, body, **({"dry_run": "All"} if dry_run else {}))
        except ApiException as exc:
            raise click.ClickException(f"creating Secret/{name} failed: {system.describe(exc)}") from None
        lines.append(f"Secret/{name} created ({about}, random)")
    return lines


def _pods(core: Any, doc: dict[str, Any]) -> list[Any]:
    labels = doc["spec"]["selector"]["matchLabels"]
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    return list(core.list_namespaced_pod(doc["metadata"]["namespace"], label_selector=selector).items)


def pod_problem(pod: Any) -> str | None:
    """Why a pod cannot become ready by waiting, or None: a missing image, a bad configuration."""
    for status in (pod.status.container_statuses or []) + (pod.status.init_container_statuses or []):
        waiting = status.state.waiting if status.state else None
        if waiting is None:
            continue
        if waiting.reason in IMAGE_ERRORS:
            return (f"image {status.image} is not in the cluster and cannot be pulled ({waiting.reason}). "
                    "Build the images (make images) and load them into the cluster "
                    "(cloverctl build images --load), or push them to a registry the cluster pulls from "
                    "and use -r/--repo")  # fmt: skip
        transient = any(m in (waiting.message or "") for m in TRANSIENT_CONFIG_MESSAGES)
        if waiting.reason in CONFIG_ERRORS and not transient:
            return f"container {status.name} cannot start: {waiting.reason}: {waiting.message}"
    return None


def refusal(core: Any, doc: dict[str, Any], since: datetime.datetime) -> str | None:
    """Why the API server refused the pods of a DaemonSet or StatefulSet since ``since`` (a
    FailedCreate event of the workload: Pod Security, a quota), or None. A Deployment's pods are
    its ReplicaSet's, whose events this does not read."""
    name, namespace = doc["metadata"]["name"], doc["metadata"]["namespace"]
    selector = f"involvedObject.kind={doc['kind']},involvedObject.name={name},reason=FailedCreate"
    events = core.list_namespaced_event(namespace, field_selector=selector).items
    recent = [e for e in events if (e.last_timestamp or e.event_time or since) >= since]
    if not recent:
        return None
    message = (recent[-1].message or "").removeprefix("(combined from similar events): ")
    return f"its pods are refused: {message}"


def _ready(apis: Mapping[str, Any], doc: dict[str, Any]) -> tuple[bool, str]:
    """Rolled out as ``kubectl rollout status`` sees it: the current generation observed, every
    replica updated and ready, and no replica of an older version left."""
    name, namespace = doc["metadata"]["name"], doc["metadata"]["namespace"]
    read = {"Deployment": "read_namespaced_deployment_status", "StatefulSet": "read_namespaced_stateful_set_status",
            "DaemonSet": "read_namespaced_daemon_set_status"}[doc["kind"]]  # fmt: skip
    live = getattr(apis["apps"], read)(name, namespace)
    st = live.status
    current = (st.observed_generation or 0) >= (live.metadata.generation or 0)
    if doc["kind"] == "DaemonSet":
        want, ready = st.desired_number_scheduled or 0, st.number_available or 0
        done = (st.updated_number_scheduled or 0) >= want and ready >= want
    elif doc["kind"] == "StatefulSet":
        want, ready = live.spec.replicas or 0, st.ready_replicas or 0
        done = ready >= want and (st.updated_replicas or 0) >= want and st.update_revision == st.current_revision
    else:
        want, ready = live.spec.replicas or 0, st.available_replicas or 0
        updated = st.updated_replicas or 0
        done = updated >= want and (st.replicas or 0) == updated and ready >= want
    return current and done, f"{ready}/{want} ready"


def wait_ready(apis: Mapping[str, Any], docs: list[dict[str, Any]], timeout: float, say: Callable[[str], None],
               poll: float = 2.0) -> None:  # fmt: skip
    """Wait until every workload in ``docs`` is ready; fail early on a pod that cannot start."""
    workloads = [d for d in docs if d["kind"] in system.WORKLOADS]
    started = time.monotonic()
    started_at = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)
    last_said: dict[str, str] = {}
    pending = list(workloads)
    while pending:
        for doc in list(pending):
            label = f"{doc['kind']}/{doc['metadata']['name']}"
            ready, state = _ready(apis, doc)
            if ready:
                say(f"{label} ready after {time.monotonic() - started:.1f}s")
                pending.remove(doc)
                continue
            refused = refusal(apis["core"], doc, started_at)
            if refused:
                raise click.ClickException(f"{label}: {refused}")
            pods = _pods(apis["core"], doc)
            wanted = sorted(c["image"] for c in doc["spec"]["template"]["spec"]["containers"])
            for pod in pods:
                if pod.metadata.deletion_timestamp or sorted(c.image for c in pod.spec.containers) != wanted:
                    continue  # a pod of an older version, on its way out
                problem = pod_problem(pod)
                if problem:
                    raise click.ClickException(f"{label}: pod {pod.metadata.name}: {problem}")
            phases = ", ".join(f"{p.metadata.name} {p.status.phase}{_unschedulable(p)}" for p in pods) or "no pod yet"
            line = f"{label}: {state} ({phases})"
            if last_said.get(label) != line:
                say(f"waiting: {line}")
                last_said[label] = line
        if not pending:
            break
        if time.monotonic() - started > timeout:
            names = ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in pending)
            namespace = pending[0]["metadata"]["namespace"]
            raise click.ClickException(f"not ready after {timeout:.0f}s: {names} (see kubectl -n {namespace} "
                                       "describe pods)")  # fmt: skip
        time.sleep(poll)


def wait_gone(apis: Mapping[str, Any], docs: list[dict[str, Any]], timeout: float, say: Callable[[str], None],
              poll: float = 1.0) -> None:  # fmt: skip
    """Wait until the pods of the deleted workloads, and the claims of deleted StatefulSets, are gone."""
    workloads = [d for d in docs if d["kind"] in system.WORKLOADS]
    started = time.monotonic()
    while True:
        left = [p.metadata.name for d in workloads for p in _pods(apis["core"], d)]
        for doc in (d for d in workloads if d["kind"] == "StatefulSet"):
            labels = doc["spec"]["selector"]["matchLabels"]
            selector = ",".join(f"{k}={v}" for k, v in labels.items())
            claims = apis["core"].list_namespaced_persistent_volume_claim(doc["metadata"]["namespace"],
                                                                          label_selector=selector).items  # fmt: skip
            left += [f"pvc/{c.metadata.name}" for c in claims]
        if not left:
            if workloads:
                say(f"pods and volume claims gone after {time.monotonic() - started:.1f}s")
            return
        if time.monotonic() - started > timeout:
            raise click.ClickException(f"still there after {timeout:.0f}s: {', '.join(left)}")
        time.sleep(poll)


def _executor_pods(core: Any, doc: dict[str, Any]) -> list[Any]:
    return list(core.list_namespaced_pod(doc["metadata"]["namespace"], label_selector=executor_selector(doc)).items)


def _unschedulable(pod: Any) -> str:
    for condition in pod.status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False" and condition.message:
            return f" ({condition.message})"
    return ""


def wait_executors(apis: Mapping[str, Any], docs: list[dict[str, Any]], timeout: float, say: Callable[[str], None],
                   poll: float = 2.0) -> None:  # fmt: skip
    """Wait until every Spark job in ``docs`` has its ``spark.executor.instances`` executor pods running."""
    jobs = [d for d in docs if d["kind"] in system.WORKLOADS]
    started = time.monotonic()
    last_said: dict[str, str] = {}
    while jobs:
        for doc in list(jobs):
            name, wanted = doc["metadata"]["name"], int(spark_conf(doc, EXECUTOR_INSTANCES) or "1")
            pods = [p for p in _executor_pods(apis["core"], doc) if not p.metadata.deletion_timestamp]
            running = sorted(p.metadata.name for p in pods if p.status.phase == "Running")
            for pod in pods:
                problem = pod_problem(pod)
                if problem:
                    raise click.ClickException(f"{name}: executor pod {pod.metadata.name}: {problem}")
            if len(running) >= wanted:
                say(f"{name}: {len(running)} executor pod(s) running after {time.monotonic() - started:.1f}s: "
                    f"{', '.join(running)}")  # fmt: skip
                jobs.remove(doc)
                continue
            states = ", ".join(f"{p.metadata.name} {p.status.phase}{_unschedulable(p)}" for p in pods) or "none yet"
            line = f"{name}: {len(running)}/{wanted} executor pods running ({states})"
            if last_said.get(name) != line:
                say(f"waiting: {line}")
                last_said[name] = line
        if not jobs:
            return
        if time.monotonic() - started > timeout:
            states = "; ".join(last_said.values())
            hint = f"kubectl -n {NAMESPACE} describe pods -l spark-role=executor"
            raise click.ClickException(f"executor pods not running after {timeout:.0f}s: {states} (see {hint})")
        time.sleep(poll)


def wait_executors_gone(apis: Mapping[str, Any], docs: list[dict[str, Any]], timeout: float,
                        say: Callable[[str], None], poll: float = 1.0) -> None:  # fmt: skip
    """Wait until the executor pods of the Spark jobs in ``docs`` are gone (their drivers own them)."""
    jobs = [d for d in docs if d["kind"] in system.WORKLOADS]
    started = time.monotonic()
    while True:
        left = [p.metadata.name for d in jobs for p in _executor_pods(apis["core"], d)]
        if not left:
            say(f"executor pods gone after {time.monotonic() - started:.1f}s")
            return
        if time.monotonic() - started > timeout:
            raise click.ClickException(f"executor pods still there after {timeout:.0f}s: {', '.join(left)}")
        time.sleep(poll)


def missing_needs(core: Any, needs: Mapping[str, str]) -> list[str]:
    """What of ``needs`` (Services, by the system that deploys them) and Redis's Secret is missing."""
    from kubernetes.client.exceptions import ApiException

    wanted = [("Service", name, f"cloverctl create system {system_name}") for name, system_name in needs.items()]
    wanted.append(("Secret", "clover-redis", "Redis's password: cloverctl create system datastore"))
    missing = []
    for kind, name, how in wanted:
        read = core.read_namespaced_service if kind == "Service" else core.read_namespaced_secret
        try:
            read(name, NAMESPACE)
        except ApiException as exc:
            if exc.status != 404:
                raise click.ClickException(f"reading {kind}/{name} failed: {system.describe(exc)}") from None
            missing.append(f"{kind}/{name} ({how})")
    return missing


def copy_secrets(core: Any, names: Sequence[str], namespace: str, dry_run: bool) -> list[str]:
    """Copy each Secret of clover-system into ``namespace``: created, or replaced by the current
    value (a new datastore makes a new password)."""
    from kubernetes.client.exceptions import ApiException

    lines = []
    for name in names:
        try:
            source = core.read_namespaced_secret(name, NAMESPACE)
        except ApiException as exc:
            how = " (cloverctl create system datastore)" if exc.status == 404 else f": {system.describe(exc)}"
            raise click.ClickException(f"reading Secret/{name} of {NAMESPACE} to copy it into {namespace} "
                                       f"failed{how}") from None  # fmt: skip
        labels = {"app.kubernetes.io/part-of": "clover", "clover/copied-from": NAMESPACE}
        body = {"apiVersion": "v1", "kind": "Secret", "type": source.type or "Opaque", "data": source.data,
                "metadata": {"name": name, "namespace": namespace, "labels": labels}}  # fmt: skip
        extra = {"dry_run": "All"} if dry_run else {}
        try:
            try:
                core.create_namespaced_secret(namespace, body, **extra)
                lines.append(f"Secret/{name} copied from {NAMESPACE} into {namespace}")
            except ApiException as exc:
                if exc.status != 409:
                    raise
                core.replace_namespaced_secret(name, namespace, body, **extra)
                lines.append(f"Secret/{name} in {namespace} updated from {NAMESPACE}")
        except ApiException as exc:
            raise click.ClickException(f"copying Secret/{name} into {namespace} failed: "
                                       f"{system.describe(exc)}") from None  # fmt: skip
    return lines


def create(docs: list[dict[str, Any]], secret_names: list[tuple[str, str, str]], kubeconfig: str | None,
           context: str | None, dry_run: bool, wait: bool, timeout: float,
           copied_secrets: Sequence[str] = ()) -> None:  # fmt: skip
    """Apply the namespace clover-system and the Namespaces in ``docs``, make the Secrets
    ``secret_names`` of clover-system, copy the Secrets ``copied_secrets`` of clover-system into
    the namespace of ``docs``' workloads, then apply the rest and wait until it is ready."""
    apis = connect(kubeconfig, context)
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    docs = [d for d in docs if d["kind"] != "Namespace"]
    for line in system.apply(apis, system.load_manifests(NAMESPACE_SYSTEM) + namespaces, dry_run):
        click.echo(line)
    used = sorted({d["metadata"]["namespace"] for d in docs if d["metadata"].get("namespace")} | {NAMESPACE})
    absent = [n for n in used if not _namespace_exists(apis["core"], n)] if dry_run else []
    if absent:
        # The API server validates namespaced objects only in an existing namespace.
        click.echo(f"(dry run: namespace {', '.join(absent)} does not exist yet; the rest is checked locally only)")
        for doc in docs:
            click.echo(f"{doc['kind']}/{doc['metadata']['name']} would be created")
        return
    for line in ensure_secrets(apis["core"], secret_names, dry_run):
        click.echo(line)
    for namespace in {d["metadata"]["namespace"] for d in docs if d["kind"] in system.WORKLOADS} - {NAMESPACE}:
        for line in copy_secrets(apis["core"], copied_secrets, namespace, dry_run):
            click.echo(line)
    for line in system.apply(apis, docs, dry_run):
        click.echo(line)
    if dry_run:
        click.echo("(dry run: nothing was changed)")
        return
    if wait:
        wait_ready(apis, docs, timeout, click.echo)
    for doc in docs:
        if doc["kind"] == "Service" and not _has_ready_endpoint(apis["core"], doc):
            click.echo(f"note: no ready pod behind Service/{doc['metadata']['name']} yet")


def _has_ready_endpoint(core: Any, service: dict[str, Any]) -> bool:
    from kubernetes import client

    selector = service.get("spec", {}).get("selector")
    if not selector:
        return True
    slices = client.DiscoveryV1Api(core.api_client).list_namespaced_endpoint_slice(
        service["metadata"]["namespace"], label_selector=f"kubernetes.io/service-name={service['metadata']['name']}"
    )
    for pods in slices.items:
        if any(e.conditions and e.conditions.ready for e in pods.endpoints or []):
            return True
    # The EndpointSlice controller may not have caught up: the pods themselves then.
    labels = ",".join(f"{k}={v}" for k, v in selector.items())
    found = core.list_namespaced_pod(service["metadata"]["namespace"], label_selector=labels).items
    return any(c.type == "Ready" and c.status == "True" for p in found for c in p.status.conditions or [])


def _namespace_exists(core: Any, name: str = NAMESPACE) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        core.read_namespace(name)
        return True
    except ApiException:
        return False


def remove(docs: list[dict[str, Any]], secret_names: list[tuple[str, str, str]], kubeconfig: str | None,
           context: str | None, wait: bool, timeout: float, copied_secrets: Sequence[str] = ()) -> None:  # fmt: skip
    """Delete ``docs``, the Secrets ``secret_names`` of clover-system and the copies
    ``copied_secrets`` made in the namespace of ``docs``' workloads, then wait until they are gone."""
    from kubernetes.client.exceptions import ApiException

    apis = connect(kubeconfig, context)
    for line in system.delete(apis, docs):
        click.echo(line)
    copies = {d["metadata"]["namespace"] for d in docs if d["kind"] in system.WORKLOADS} - {NAMESPACE}
    targets = [(name, NAMESPACE) for name, _, _ in secret_names]
    targets += [(name, namespace) for namespace in sorted(copies) for name in copied_secrets]
    for name, namespace in targets:
        where = "" if namespace == NAMESPACE else f" in {namespace}"
        try:
            apis["core"].delete_namespaced_secret(name, namespace)
            click.echo(f"Secret/{name}{where} deleted")
        except ApiException as exc:
            if exc.status != 404:
                raise click.ClickException(f"deleting Secret/{name}{where} failed: {system.describe(exc)}") from None
            click.echo(f"Secret/{name}{where} not found")
    if wait:
        wait_gone(apis, docs, timeout, click.echo)


def common(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = system.cluster_options(fn)
    fn = click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait.")(fn)
    return click.option("--wait/--no-wait", default=True, show_default=True,
                        help="Wait until ready (create) or gone (delete).")(fn)  # fmt: skip


def create_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = common(fn)
    fn = click.option("--dry-run", is_flag=True, help="Ask the API server to validate only (dryRun=All).")(fn)
    fn = click.option("-t", "--tag", default=None, help="Image tag (default: the manifests', latest).")(fn)
    return click.option("-r", "--repo", default=None, help="Image repository (default: the manifests', opnfv).")(fn)


@click.command("datastore")
@create_options
def create_datastore(repo: str | None, tag: str | None, dry_run: bool, wait: bool, timeout: float,
                     kubeconfig: str | None, context: str | None) -> None:  # fmt: skip
    """Deploy the datastore in clover-system: Cassandra (StatefulSet, persistent volume) and Redis
    (its password from the Secret clover-redis, made when missing)."""
    create(load(DATASTORE, tag=tag, repo=repo), SECRETS["datastore"], kubeconfig, context, dry_run, wait, timeout)


@click.command("datastore")
@common
def delete_datastore(wait: bool, timeout: float, kubeconfig: str | None, context: str | None) -> None:
    """Remove Cassandra (and its volume claim: its data), Redis and the Secret clover-redis."""
    remove(load(DATASTORE), SECRETS["datastore"], kubeconfig, context, wait, timeout)


@click.command("kafka")
@create_options
def create_kafka(repo: str | None, tag: str | None, dry_run: bool, wait: bool, timeout: float,
                 kubeconfig: str | None, context: str | None) -> None:  # fmt: skip
    """Deploy Kafka (KRaft, one broker, persistent volume) in clover-system: kafka.clover-system:9092."""
    create(load(KAFKA, tag=tag, repo=repo), [], kubeconfig, context, dry_run, wait, timeout)


@click.command("kafka")
@common
def delete_kafka(wait: bool, timeout: float, kubeconfig: str | None, context: str | None) -> None:
    """Remove Kafka and its volume claim (its topics)."""
    remove(load(KAFKA), [], kubeconfig, context, wait, timeout)


@click.command("collector")
@click.option("--jaeger-url", default=None, help="The trace backend's query API (CLOVER_JAEGER_URL; default "
              "http://jaeger.clover-system:16686, cloverctl create system monitoring).")  # fmt: skip
@click.option("--prometheus-url", default=None, help="Prometheus (CLOVER_PROMETHEUS_URL; default "
              "http://prometheus.clover-system:9090).")  # fmt: skip
@create_options
def create_collector(jaeger_url: str | None, prometheus_url: str | None, repo: str | None, tag: str | None,
                     dry_run: bool, wait: bool, timeout: float, kubeconfig: str | None,
                     context: str | None) -> None:  # fmt: skip
    """Deploy clover-collector (gRPC 50054) in clover-system; it needs the datastore and Kafka, and
    reads the trace backend and Prometheus of cloverctl create system monitoring, or existing ones
    (--jaeger-url, --prometheus-url)."""
    urls = (("CLOVER_JAEGER_URL", jaeger_url), ("CLOVER_PROMETHEUS_URL", prometheus_url))
    env = {"clover-collector": {name: url for name, url in urls if url}}
    create(load(COLLECTOR, tag=tag, repo=repo, env=env), [], kubeconfig, context, dry_run, wait, timeout)


@click.command("collector")
@common
def delete_collector(wait: bool, timeout: float, kubeconfig: str | None, context: str | None) -> None:
    """Remove clover-collector and its Service."""
    remove(load(COLLECTOR), [], kubeconfig, context, wait, timeout)


@click.command("visibility")
@click.option(
    "--executors",
    type=click.IntRange(min=1),
    default=None,
    help="Executor pods of each job (spark.executor.instances; default: the manifest's, 1).",
)
@create_options
def create_visibility(executors: int | None, repo: str | None, tag: str | None, dry_run: bool, wait: bool,
                      timeout: float, kubeconfig: str | None, context: str | None) -> None:  # fmt: skip
    """Deploy the visibility system in clover-system: the ingest (Kafka -> Cassandra) and the
    analytics (Cassandra -> Redis) as Spark applications, each driver in a pod of its own (service
    account clover-spark, a namespaced Role) with its executor pods. Needs the datastore and Kafka."""
    docs = load(VISIBILITY_RBAC, VISIBILITY, tag=tag, repo=repo)
    if executors is not None:
        set_executors(docs, executors)
    missing = missing_needs(connect(kubeconfig, context)["core"], VISIBILITY_NEEDS)
    if missing and not dry_run:
        raise click.ClickException(f"the visibility system needs, in {NAMESPACE}: {'; '.join(missing)}")
    create(docs, [], kubeconfig, context, dry_run, wait, timeout)
    if missing:
        click.echo(f"note: the visibility system will need, in {NAMESPACE}: {'; '.join(missing)}")
    if wait and not dry_run:
        wait_executors(connect(kubeconfig, context), docs, timeout, click.echo)


@click.command("visibility")
@common
def delete_visibility(wait: bool, timeout: float, kubeconfig: str | None, context: str | None) -> None:
    """Remove the ingest (and its checkpoint's volume claim), the analytics and their executor
    pods, then the service account clover-spark and its Role."""
    jobs = load(VISIBILITY)
    remove(jobs, [], kubeconfig, context, wait, timeout)
    if wait:
        wait_executors_gone(connect(kubeconfig, context), jobs, timeout, click.echo)
    remove(load(VISIBILITY_RBAC), [], kubeconfig, context, False, timeout)


variant_argument = click.argument("variant", required=False, type=click.Choice(sorted(CONTROLLER_SERVICES)))


@click.command("controller")
@variant_argument
@create_options
def create_controller(variant: str | None, repo: str | None, tag: str | None, dry_run: bool, wait: bool,
                      timeout: float, kubeconfig: str | None, context: str | None) -> None:  # fmt: skip
    """Deploy clover-controller and its internal Service in clover-system; with VARIANT only the
    Service clover-controller that opens it: nodeport (port 32044 on every node) or lb (a load
    balancer's port 80). The controller needs the datastore's Secret clover-redis."""
    if variant:
        create(load(CONTROLLER_SERVICES[variant]), [], kubeconfig, context, dry_run, False, timeout)
        return
    create(load(CONTROLLER, tag=tag, repo=repo), SECRETS["controller"], kubeconfig, context, dry_run, wait, timeout)


@click.command("controller")
@variant_argument
@common
def delete_controller(variant: str | None, wait: bool, timeout: float, kubeconfig: str | None,
                      context: str | None) -> None:  # fmt: skip
    """Remove clover-controller, its internal Service and the Secret clover-controller; with
    VARIANT only the Service clover-controller (nodeport or lb)."""
    if variant:
        remove(load(CONTROLLER_SERVICES[variant]), [], kubeconfig, context, False, timeout)
        return
    remove(load(CONTROLLER), SECRETS["controller"], kubeconfig, context, wait, timeout)


def _ports(service: Any) -> str:
    ports = []
    for p in service.spec.ports or []:
        text = f"{p.port}" + (f":{p.node_port}" if p.node_port else "") + f"/{p.protocol}"
        ports.append(text)
    return ",".join(ports) or "-"


def services_table(items: list[Any]) -> str:
    rows = [("NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "LABELS")]
    for s in sorted(items, key=lambda s: (s.metadata.namespace, s.metadata.name)):
        ingress = (s.status.load_balancer.ingress or []) if s.status and s.status.load_balancer else []
        external = ",".join(i.ip or i.hostname or "" for i in ingress) or "-"
        labels = ",".join(f"{k}={v}" for k, v in sorted((s.metadata.labels or {}).items())) or "-"
        rows.append((s.metadata.namespace, s.metadata.name, s.spec.type, s.spec.cluster_ip or "-", external,
                     _ports(s), labels))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows)


@click.command("services")
@click.option("-n", "--namespace", default=None, help="Only this namespace (default: every namespace).")
@system.cluster_options
def get_services(namespace: str | None, kubeconfig: str | None, context: str | None) -> None:
    """List the cluster's Services: type, cluster IP, load balancer address, ports (port:nodePort)."""
    from kubernetes.client.exceptions import ApiException

    core = connect(kubeconfig, context)["core"]
    try:
        found = (core.list_namespaced_service(namespace) if namespace else core.list_service_for_all_namespaces()).items
    except ApiException as exc:
        raise click.ClickException(f"listing Services failed: {system.describe(exc)}") from None
    click.echo(services_table(list(found)))


def register(verbs: Mapping[str, click.Group]) -> None:
    """Add the commands to the CLI's verbs."""
    system.register(verbs, create_datastore, delete_datastore)
    system.register(verbs, create_controller, delete_controller)
    system.register(verbs, create_kafka, delete_kafka)
    system.register(verbs, create_collector, delete_collector)
    system.register(verbs, create_visibility, delete_visibility)
    verbs["get"].add_command(get_services)
