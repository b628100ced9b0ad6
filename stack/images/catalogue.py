"""Every image ``make images`` builds, and the layers they are made of.

Each image is ``<repo>/<name>:<tag>`` (``opnfv/clover-controller:latest`` by default, the
original's names). All of them start with the same three layers, ``debian`` (bookworm minbase,
Python 3.11, tini), ``python`` (the pinned dependencies) and ``clover`` (the project), so a node
stores those once; an image adds at most a Debian package set and the artifacts of its part,
and Clover's own components differ only by their entry point.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clover.config import Config
from sdc import topology
from stack.images.debian import SUITE
from stack.images.oci import RunConfig
from stack.images.python import PROJECT, SITE

USER = "clover"
UID = 10001
STATE_DIR = "/var/lib/clover"
JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64"
SPARK_HOME = f"/{SITE}/pyspark"
JMETER_HOME = "/opt/jmeter"
DEFAULT_REPO = "opnfv"
DEFAULT_TAG = "latest"


@dataclass(frozen=True)
class DebianLayer:
    """Debian packages: the base system itself (``base``), or what installing ``packages`` on
    it changes; ``drop``: paths removed after installing, that nothing here uses."""

    name: str
    packages: tuple[str, ...]
    base: bool = False
    drop: tuple[str, ...] = ()


@dataclass(frozen=True)
class PythonLayer:
    """Installed distributions: the runtime requirements (``roots`` empty) or ``roots``, less
    whatever the layers named in ``beside`` already carry."""

    name: str
    roots: tuple[str, ...] = ()
    beside: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProjectLayer:
    """The project in /opt/clover, with its generated modules and the C extension."""

    name: str


@dataclass(frozen=True)
class FilesLayer:
    """Directories of the stack cache (``copies``: cache path -> image path) and empty
    directories owned by the image's user (``owned``)."""

    name: str
    copies: tuple[tuple[str, str], ...] = ()
    owned: tuple[str, ...] = ()


LayerSpec = DebianLayer | PythonLayer | ProjectLayer | FilesLayer

# Distributions the image's Python 3.11.2 needs and the virtualenv's newer 3.11 does not
# (redis: ``async-timeout; python_full_version < '3.11.3'``), pinned here.
EXTRA_PINS = {"async-timeout": "5.0.1"}
# Requirements that no image runs: nothing imports them outside tests, or only at build time.
NOT_IN_IMAGES = ("selenium", "grpcio-tools", "pyspark", "pyarrow", "pandas", "numpy")

VICTORIA_LOGS, OTELCOL = "victorialogs/victoria-logs", "otelcol/otelcol"  # built by make setup (stack/setup.sh)

LAYERS: dict[str, LayerSpec] = {
    spec.name: spec
    for spec in (
        DebianLayer("debian", ("python3", "python-is-python3", "ca-certificates", "tini"), base=True),
        PythonLayer("python"),
        ProjectLayer("clover"),
        DebianLayer("java", ("openjdk-17-jre-headless",)),
        DebianLayer("bcc", ("python3-bpfcc", "xz-utils")),
        DebianLayer("redis", ("redis-server",)),
        # Apache's binary and modules without Debian's /etc/apache2 (the WAF renders its own configuration).
        DebianLayer("modsecurity", ("apache2-bin", "libapache2-mod-security2", "modsecurity-crs")),
        # The classic web UI's time-zone data in every packaging (212 MB); the UI loads the one
        # moment-timezone-with-data.min.js above it.
        DebianLayer("prometheus", ("prometheus",), drop=("usr/share/javascript/moment-timezone/data",)),
        PythonLayer("pyspark", roots=("pyspark",), beside=("python",)),
        FilesLayer("spark", (("spark/lib", f"{SPARK_HOME}/jars"),), ("/opt/spark/conf", "/opt/spark/work-dir")),
        FilesLayer("kafka", copies=(("kafka/lib", f"/{PROJECT}/stack/cache/kafka/lib"),)),
        FilesLayer("cassandra", copies=(("cassandra/lib", f"/{PROJECT}/stack/cache/cassandra/lib"),)),
        FilesLayer("jmeter", copies=(("jmeter/home", JMETER_HOME),)),
        FilesLayer("jaeger", copies=(("jaeger/jaeger", f"/{PROJECT}/stack/cache/jaeger/jaeger"),)),
        FilesLayer("victorialogs", copies=((VICTORIA_LOGS, f"/{PROJECT}/stack/cache/{VICTORIA_LOGS}"),)),
        FilesLayer("otelcol", copies=((OTELCOL, f"/{PROJECT}/stack/cache/{OTELCOL}"),)),
    )
}
BASE = ("debian", "python", "clover")


@dataclass(frozen=True)
class Image:
    """One image: its layers (bottom first) and how it runs."""

    name: str
    layers: tuple[str, ...]
    run: RunConfig
    about: str
    notes: tuple[str, ...] = field(default=())

    def reference(self, repo: str, tag: str) -> str:
        return f"{repo.rstrip('/')}/{self.name}:{tag}" if repo else f"{self.name}:{tag}"


def _env(*extra: tuple[str, str]) -> dict[str, str]:
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "CLOVER_HOME": f"/{PROJECT}",
        "CLOVER_STATE_DIR": STATE_DIR,
        **dict(extra),
    }


def _run(entrypoint: list[str], cmd: list[str], ports: list[int | str], *env: tuple[str, str],
         user: str = str(UID), workdir: str = STATE_DIR) -> RunConfig:  # fmt: skip
    return RunConfig(entrypoint, cmd, _env(*env), user, workdir, [str(p) for p in ports],
                     {"org.opencontainers.image.source": "https://github.com/opnfv/clover (re-implemented)",
                      "org.opencontainers.image.base.name": f"debian:{SUITE} (debootstrap minbase)"})  # fmt: skip


JAVA = ("JAVA_HOME", JAVA_HOME)


def images() -> list[Image]:
    """The images, in build order. Ports are the local stack's defaults (``clover/config.py``)."""
    d = Config.from_env({})
    grpc = ["--listen"]
    sdc = ["python", "-m", "sdc.pod"]
    sdc_ports: list[int | str] = [topology.HTTP_PORT, topology.GRPC_PORT, d.sdc_stats_port]
    backing = ["python", "-m", "stack.images.entry"]
    return [
        Image("clover-base", BASE, _run([], ["python3"], []),
              "Python 3.11, the pinned dependencies and the project; cloverctl and clovisor on PATH"),
        Image("clover-controller", BASE,
              _run(["python", "-m", "controller.server"], [*grpc, f"0.0.0.0:{d.controller_port}"], [d.controller_port]),
              "REST API and dashboard"),
        Image("clover-collector", BASE, _run(["python", "-m", "collector.server"], [*grpc, "0.0.0.0:50054"], [50054]),
              "trace backend + Prometheus -> Kafka; gRPC control"),
        Image("clover-ns-nginx-proxy", BASE, _run(sdc, ["proxy-access-control"], sdc_ports),
              "sample chain: proxy-access-control (argument: the pod's name)"),
        Image("clover-ns-nginx-lb", BASE, _run(sdc, ["http-lb-v1"], sdc_ports),
              "sample chain: http-lb-v1/v2 (argument: the pod's name)"),
        Image("clover-ns-nginx-server", BASE, _run(sdc, ["clover-server1"], sdc_ports),
              "sample chain: clover-server1..5 (argument: the pod's name)"),
        Image("clover-ns-snort-ids", BASE,
              _run(sdc, ["snort-ids"], [topology.IDS_HTTP_PORT, topology.IDS_GRPC_PORT, d.sdc_stats_port]),
              "sample chain: snort-ids"),
        Image("clover-modsecurity-crs", (*BASE, "modsecurity"),
              _run(sdc, ["modsecurity-crs"], [topology.WAF_HTTP_PORT_UNPRIVILEGED, d.sdc_stats_port]),
              "the WAF in front of the sample chain: Apache, ModSecurity 2 and the OWASP CRS (k8s/gateway)"),
        Image("clover-jmeter-master", (*BASE, "java", "jmeter"),
              _run(["python", "-m", "validation.server"], [*grpc, "0.0.0.0:50054"], [50054], JAVA,
                   ("CLOVER_JMETER_HOME", JMETER_HOME)),
              "validation service (gRPC jmeter.Controller) with JMeter in /opt/jmeter"),
        Image("clover-jmeter-slave", (*BASE, "java", "jmeter"),
              _run(["python", "-m", "validation.slave"], [], [d.jmeter_rmi_port], JAVA,
                   ("CLOVER_JMETER_HOME", JMETER_HOME)),
              "a JMeter server (RMI)"),
        Image("clover-clovisor", (*BASE, "bcc"),
              _run(["clovisor"], ["run", "--discovery", "kubernetes"], [d.clovisor_metrics_port], user="0"),
              "eBPF tracer (root; kernel headers from the host: /lib/modules and /usr/src as hostPath)"),
        Image("clover-spark", (*BASE, "java", "pyspark", "spark"),
              _run(["/usr/bin/tini", "-s", "--", "python3", "-m", "stack.images.sparkentry"], [], [], JAVA,
                   ("SPARK_HOME", SPARK_HOME), ("PYSPARK_PYTHON", "python3"), ("PYSPARK_DRIVER_PYTHON", "python3"),
                   workdir="/opt/spark/work-dir"),
              "Spark 3.5 on Kubernetes: driver/executor entry point, connector jars, jobs in /opt/clover/jobs"),
        Image("clover-spark-submit", (*BASE, "java", "pyspark", "spark"),
              _run(["/usr/bin/tini", "--", f"{SPARK_HOME}/bin/spark-submit"], ["--version"], [], JAVA,
                   ("SPARK_HOME", SPARK_HOME), ("PYSPARK_PYTHON", "python3"), ("PYSPARK_DRIVER_PYTHON", "python3"),
                   workdir="/opt/spark/work-dir"),
              "spark-submit (arguments: a submission, e.g. --master k8s://... local:///opt/clover/jobs/ingest.py)"),
        Image("clover-cassandra", (*BASE, "java", "cassandra"),
              _run([*backing, "cassandra"], [], [d.cassandra_port, d.cassandra_storage_port], JAVA),
              "Cassandra 5.0 (cassandra-all from the stack cache), the local stack's cassandra.yaml"),
        Image("clover-kafka", (*BASE, "java", "kafka"),
              _run([*backing, "kafka"], [], [d.kafka_port, d.kafka_controller_port], JAVA),
              "Kafka 4.1 in KRaft mode (from the stack cache), the local stack's server.properties"),
        Image("clover-redis", (*BASE, "redis"), _run([*backing, "redis"], [], [d.redis_port]),
              "Debian's redis-server with the local stack's redis.conf"),
        Image("clover-prometheus", (*BASE, "prometheus"), _run([*backing, "prometheus"], [], [d.prometheus_port]),
              "Debian's prometheus with the local stack's prometheus.yml"),
        Image("clover-jaeger", (*BASE, "jaeger"),
              _run([*backing, "jaeger"], [], [d.jaeger_port, d.jaeger_query_grpc_port, d.otlp_grpc_port,
                                              d.otlp_http_port, d.jaeger_thrift_port, f"{d.jaeger_agent_port}/udp",
                                              d.jaeger_health_port]),
              "Jaeger all-in-one (built by make setup) with the local stack's jaeger.yaml"),
        Image("clover-log-store", (*BASE, "victorialogs"),
              _run([f"/{PROJECT}/stack/cache/{VICTORIA_LOGS}"],
                   [f"-storageDataPath={STATE_DIR}/log-store", "-httpListenAddr=:9428"], [9428]),
              "VictoriaLogs (built by make setup): the log store of k8s/logging"),
        Image("clover-log-shipper", (*BASE, "otelcol"),
              _run([f"/{PROJECT}/stack/cache/{OTELCOL}"], ["--config=file:/etc/clover/log-shipper.yaml"], [8889]),
              "the OpenTelemetry Collector (built by make setup): the log shipper of k8s/logging"),
    ]  # fmt: skip


def by_name() -> dict[str, Image]:
    return {image.name: image for image in images()}


def layers_of(chosen: list[Image]) -> list[str]:
    """The layers the chosen images need, each once, in the order they are first used."""
    names: list[str] = []
    for image in chosen:
        names += [n for n in image.layers if n not in names]
    return names
