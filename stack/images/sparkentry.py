"""The Spark image's entry point: what Spark on Kubernetes expects of a container image.

Spark starts its pods with this image's entry point and the arguments ``driver ...`` (the
driver of a ``--deploy-mode cluster`` application: run ``spark-submit`` in client mode on the
pod's address) or ``executor`` (an executor backend whose settings come in ``SPARK_*``
variables). ``client ...`` runs a long-lived driver in a pod of its own (the visibility
system, k8s/visibility/visibility.yaml): ``spark-submit`` in client mode against the API server
of the cluster the pod is in, with executor pods of the pod's own image. Anything else runs as
given, so the image also serves ``spark-submit`` and plain commands. The connector jars are in
``$SPARK_HOME/jars``, the project on ``python3``'s path, so ``local:///opt/clover/jobs/<job>.py``
is all a submission names.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

EXECUTOR_BACKEND = "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend"
# The executor's settings: (variable Spark sets on the pod, the backend's option).
EXECUTOR_OPTIONS = (
    ("SPARK_DRIVER_URL", "--driver-url"),
    ("SPARK_EXECUTOR_ID", "--executor-id"),
    ("SPARK_EXECUTOR_CORES", "--cores"),
    ("SPARK_APPLICATION_ID", "--app-id"),
    ("SPARK_EXECUTOR_POD_IP", "--hostname"),
    ("SPARK_RESOURCE_PROFILE_ID", "--resourceProfileId"),
    ("SPARK_EXECUTOR_POD_NAME", "--podName"),
)


SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# A driver in a pod: its fixed ports (the executors connect to them at the pod's address) and the
# executors' pod template, in the image with the project.
DRIVER_PORT = 7078
DRIVER_BLOCK_MANAGER_PORT = 7079
EXECUTOR_TEMPLATE = "/opt/clover/k8s/visibility/executor-template.yaml"
CONTAINER = "spark"
# What spark-submit.sh gives every job (the parallel collector, no console progress), and the log
# configuration, in the image.
JOB_DEFAULTS = {"spark.ui.showConsoleProgress": "false", "spark.executor.extraJavaOptions": "-XX:+UseParallelGC"}
DRIVER_JAVA_OPTIONS = (
    "-XX:+UseParallelGC -Dlog4j2.configurationFile=file:/opt/clover/stack/conf/spark-log4j2.properties"
)


class EntryError(RuntimeError):
    """The pod lacks a setting Spark should have given it."""


def classpath(env: Mapping[str, str]) -> str:
    """The executor's class path: Spark's configuration directory (or Hadoop's), the image's
    ``$SPARK_HOME/jars`` and whatever ``SPARK_CLASSPATH``/``SPARK_EXTRA_CLASSPATH``/
    ``SPARK_DIST_CLASSPATH`` add."""
    home = env["SPARK_HOME"]
    conf = env.get("SPARK_CONF_DIR") or f"{home}/conf"
    parts = [conf, env.get("HADOOP_CONF_DIR", ""), env.get("SPARK_CLASSPATH", ""), f"{home}/jars/*",
             env.get("SPARK_EXTRA_CLASSPATH", ""), env.get("SPARK_DIST_CLASSPATH", "")]  # fmt: skip
    return ":".join(p for p in parts if p)


def java_options(env: Mapping[str, str]) -> list[str]:
    """``SPARK_JAVA_OPT_<n>`` values in the order of ``n``."""
    numbered = []
    for key, value in env.items():
        found = re.fullmatch(r"SPARK_JAVA_OPT_(\d+)", key)
        if found:
            numbered.append((int(found.group(1)), value))
    return [value for _, value in sorted(numbered)]


def api_server(env: Mapping[str, str]) -> str:
    """The API server of the cluster this pod runs in (the variables every pod gets)."""
    host = env.get("KUBERNETES_SERVICE_HOST")
    if not host:
        raise EntryError("client: not in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set)")
    port = env.get("KUBERNETES_SERVICE_PORT_HTTPS") or env.get("KUBERNETES_SERVICE_PORT") or "443"
    return f"https://{f'[{host}]' if ':' in host else host}:{port}"


def read_own_pod(env: Mapping[str, str], account: Path = SERVICE_ACCOUNT, tries: int = 5) -> dict[str, Any]:
    """This pod as the API server has it (the Role clover-spark allows ``get pods``)."""
    name = env.get("POD_NAME")
    if not name:
        raise EntryError("client: POD_NAME is not set (give it from the downward API: metadata.name)")
    try:
        token = (account / "token").read_text().strip()
        namespace = (account / "namespace").read_text().strip()
    except OSError as exc:
        raise EntryError(f"client: no service-account token in the pod ({exc}); the driver needs one") from None
    url = f"{api_server(env)}/api/v1/namespaces/{namespace}/pods/{name}"
    context = ssl.create_default_context(cafile=str(account / "ca.crt"))
    asked = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(asked, context=context, timeout=30) as answer:
                found: dict[str, Any] = json.load(answer)
                return found
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise EntryError(f"client: the API server refused to show pod {namespace}/{name} ({exc.code}): "
                                 "the pod's service account needs a Role allowing get pods "
                                 "(k8s/visibility/spark-rbac.yaml)") from None  # fmt: skip
            problem: Exception = exc
        except (OSError, ValueError) as exc:
            problem = exc
        if attempt + 1 < tries:
            time.sleep(2)
    raise EntryError(f"client: reading pod {namespace}/{name} at {url} failed: {problem}")


def client_command(args: list[str], env: Mapping[str, str], pod: Mapping[str, Any]) -> list[str]:
    """``spark-submit`` for a driver in this pod (client mode) whose executors are pods of the same
    image, in the same namespace, owned by this pod. ``args`` (a submission's options, the job
    and its arguments) come last, so a ``--conf`` there overrides one here."""
    ip = env.get("POD_IP")
    if not ip:
        raise EntryError("client: POD_IP is not set (give it from the downward API: status.podIP)")
    containers = pod["spec"]["containers"]
    spark = next((c for c in containers if c["name"] == CONTAINER), containers[0])
    confs = {
        "spark.kubernetes.namespace": pod["metadata"]["namespace"],
        "spark.kubernetes.driver.pod.name": pod["metadata"]["name"],
        "spark.kubernetes.container.image": spark["image"],
        "spark.kubernetes.container.image.pullPolicy": spark.get("imagePullPolicy") or "IfNotPresent",
        "spark.kubernetes.executor.podTemplateFile": EXECUTOR_TEMPLATE,
        "spark.kubernetes.executor.podTemplateContainerName": CONTAINER,
        "spark.kubernetes.authenticate.caCertFile": str(SERVICE_ACCOUNT / "ca.crt"),
        "spark.driver.host": ip,
        "spark.driver.bindAddress": ip,
        "spark.driver.port": str(DRIVER_PORT),
        "spark.driver.blockManager.port": str(DRIVER_BLOCK_MANAGER_PORT),
        "spark.ui.enabled": "false",
        **JOB_DEFAULTS,
    }
    argv = [f"{env['SPARK_HOME']}/bin/spark-submit", "--master", f"k8s://{api_server(env)}", "--deploy-mode", "client"]
    for key, value in confs.items():
        argv += ["--conf", f"{key}={value}"]
    return [*argv, "--driver-java-options", DRIVER_JAVA_OPTIONS, *args]


def command(args: list[str], env: Mapping[str, str],
            own_pod: Callable[[Mapping[str, str]], Mapping[str, Any]] = read_own_pod) -> list[str]:  # fmt: skip
    """What to run for the container's arguments."""
    if args[:1] == ["client"]:
        if len(args) < 2:
            raise EntryError("client: give the job (and spark-submit options before it)")
        return client_command(args[1:], env, own_pod(env))
    if args[:1] == ["driver"]:
        bind = env.get("SPARK_DRIVER_BIND_ADDRESS")
        if not bind:
            raise EntryError("driver: SPARK_DRIVER_BIND_ADDRESS is not set (Spark sets it to the pod's address)")
        submit = f"{env['SPARK_HOME']}/bin/spark-submit"
        return [submit, "--conf", f"spark.driver.bindAddress={bind}", "--deploy-mode", "client", *args[1:]]
    if args[:1] == ["executor"]:
        missing = [name for name, _ in EXECUTOR_OPTIONS if not env.get(name)] + (
            [] if env.get("SPARK_EXECUTOR_MEMORY") else ["SPARK_EXECUTOR_MEMORY"]
        )
        if missing:
            raise EntryError(f"executor: {', '.join(missing)} not set (Spark sets them on executor pods)")
        memory = env["SPARK_EXECUTOR_MEMORY"]
        argv = [f"{env['JAVA_HOME']}/bin/java", *java_options(env), f"-Xms{memory}", f"-Xmx{memory}",
                "-cp", classpath(env), EXECUTOR_BACKEND]  # fmt: skip
        for name, option in EXECUTOR_OPTIONS:
            argv += [option, env[name]]
        return argv
    return args or ["python3"]


def ensure_user() -> None:
    """Spark (Hadoop's login) needs a name for the process's uid: add one when the image has
    none and /etc/passwd is writable, as Spark's own images do."""
    uid = os.getuid()
    try:
        pwd.getpwuid(uid)
    except KeyError:
        if os.access("/etc/passwd", os.W_OK):
            name = os.environ.get("SPARK_USER_NAME", "anonymous uid")
            with open("/etc/passwd", "a") as passwd:
                passwd.write(f"{uid}:x:{uid}:{os.getgid()}:{name}:{os.environ.get('SPARK_HOME', '/')}:/bin/false\n")
        else:
            print(f"sparkentry: uid {uid} has no /etc/passwd entry (run as 10001, the image's user)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    ensure_user()
    try:
        run = command(args, os.environ)
    except EntryError as exc:
        print(f"sparkentry: {exc}", file=sys.stderr)
        return 1
    os.execvp(run[0], run)


if __name__ == "__main__":
    sys.exit(main())
