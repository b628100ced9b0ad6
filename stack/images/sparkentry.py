"""The Spark image's entry point: what Spark on Kubernetes expects of a container image.

Spark starts its pods with this image's entry point and the arguments ``driver ...`` (the
driver of a ``--deploy-mode cluster`` application: run ``spark-submit`` in client mode on the
pod's address) or ``executor`` (an executor backend whose settings come in ``SPARK_*``
variables). Anything else runs as given, so the image also serves ``spark-submit`` and plain
commands. The connector jars are in ``$SPARK_HOME/jars``, the project on ``python3``'s path,
so ``local:///opt/clover/jobs/<job>.py`` is all a submission names.
"""

from __future__ import annotations

import os
import pwd
import re
import sys
from collections.abc import Mapping

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


def command(args: list[str], env: Mapping[str, str]) -> list[str]:
    """What to run for the container's arguments."""
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
