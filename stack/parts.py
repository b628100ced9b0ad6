"""The backing services of the local stack: how each is configured, started and probed.

A part's files live under ``<state dir>/<part>/``: its rendered configuration, ``data/`` and
``<part>.log``. Configuration templates are in ``stack/conf/``; the JVM artifacts and the
Jaeger binary are in the stack cache that ``make setup`` fills.
"""

from __future__ import annotations

import base64
import os
import shutil
import string
import subprocess
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from clover.config import Config
from stack import probes
from stack.java import find_java

CONF_DIR = Path(__file__).resolve().parent / "conf"


@dataclass(frozen=True)
class PartDirs:
    """Where one part keeps its files."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / f"{self.root.name}.log"


@dataclass(frozen=True)
class Launch:
    """What to execute to run a part in the foreground."""

    argv: list[str]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Part:
    """One backing service of the local stack."""

    name: str
    ports: Mapping[str, int]
    health: str
    probe: Callable[[], None]
    prepare: Callable[[PartDirs], Launch]
    uses_java: bool = False
    startup_timeout: float = 60.0
    stop_timeout: float = 30.0
    installed: tuple[Path, ...] = ()

    @property
    def main_port(self) -> int:
        """The part's first port (0 for a part that listens on none of its own)."""
        return next(iter(self.ports.values()), 0)


def render(template: str, target: Path, **values: object) -> Path:
    """Write ``stack/conf/<template>`` to ``target`` with ``$name`` placeholders filled."""
    text = string.Template((CONF_DIR / template).read_text()).substitute({k: str(v) for k, v in values.items()})
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def classpath(lib: Path) -> str:
    return str(lib / "*")


def jvm_options_file(name: str) -> list[str]:
    """Options from a ``stack/conf`` file, one per line, ``#`` comments skipped.

    ``--add-opens x`` lines become ``--add-opens=x``: one argument each."""
    lines = (CONF_DIR / name).read_text().splitlines()
    options = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [option.replace(" ", "=", 1) for option in options]


def redis_part(cfg: Config) -> Part:
    server = shutil.which("redis-server") or "/usr/bin/redis-server"

    def prepare(dirs: PartDirs) -> Launch:
        dirs.data.mkdir(parents=True, exist_ok=True)
        conf = render("redis.conf", dirs.root / "redis.conf", port=cfg.redis_port, data_dir=dirs.data)
        return Launch([server, str(conf)])

    return Part(
        name="redis",
        ports={"redis": cfg.redis_port},
        health="PING",
        probe=lambda: probes.redis_ping(cfg.redis_url),
        prepare=prepare,
        startup_timeout=20,
        installed=(Path(server),),
    )


def kafka_cluster_id(dirs: PartDirs) -> str:
    """The KRaft cluster id, made once per state directory."""
    id_file = dirs.root / "cluster-id"
    if not id_file.exists():
        draft = id_file.with_suffix(f".{os.getpid()}")
        draft.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
        draft.replace(id_file)  # a concurrent reader never sees a half-written id
    return id_file.read_text().strip()


def kafka_part(cfg: Config) -> Part:
    lib = cfg.stack_cache / "kafka" / "lib"

    def prepare(dirs: PartDirs) -> Launch:
        java = str(find_java(cfg.java_home))
        dirs.data.mkdir(parents=True, exist_ok=True)
        props = render(
            "kafka.properties",
            dirs.root / "server.properties",
            port=cfg.kafka_port,
            controller_port=cfg.kafka_controller_port,
            data_dir=dirs.data,
        )
        log4j = f"-Dlog4j2.configurationFile={CONF_DIR / 'kafka-log4j2.properties'}"
        if not (dirs.data / "meta.properties").exists():
            formatted = subprocess.run(
                [java, log4j, "-cp", classpath(lib), "kafka.tools.StorageTool", "format",
                 "--cluster-id", kafka_cluster_id(dirs), "--config", str(props), "--ignore-formatted"],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            if formatted.returncode != 0:
                raise RuntimeError(f"formatting the Kafka log directory failed: {formatted.stderr[-500:]}")
        return Launch(
            [java, "-Xms768m", "-Xmx768m", "-XX:+UseG1GC", "-Djava.awt.headless=true", log4j,
             "-cp", classpath(lib), "kafka.Kafka", str(props)]
        )  # fmt: skip

    return Part(
        name="kafka",
        ports={"broker": cfg.kafka_port, "controller": cfg.kafka_controller_port},
        health="metadata request",
        probe=lambda: probes.kafka_metadata(cfg.kafka_bootstrap),
        prepare=prepare,
        uses_java=True,
        startup_timeout=90,
        stop_timeout=40,
        installed=(lib,),
    )


def cassandra_part(cfg: Config) -> Part:
    lib = cfg.stack_cache / "cassandra" / "lib"

    def prepare(dirs: PartDirs) -> Launch:
        java = str(find_java(cfg.java_home))
        dirs.data.mkdir(parents=True, exist_ok=True)
        conf = render(
            "cassandra.yaml",
            dirs.root / "cassandra.yaml",
            port=cfg.cassandra_port,
            storage_port=cfg.cassandra_storage_port,
            data_dir=dirs.data,
        )
        jamm = sorted(lib.glob("jamm-*.jar"))
        agent = [f"-javaagent:{jamm[0]}"] if jamm else []
        return Launch(
            [java, "-Xms2g", "-Xmx2g", "-Xss512k", *jvm_options_file("cassandra-jvm17.options"), *agent,
             f"-Dcassandra.config=file://{conf}", "-Dcassandra-foreground=yes",
             f"-Dcassandra.storagedir={dirs.data}", f"-Dcassandra.logdir={dirs.root}",
             f"-Dlogback.configurationFile={CONF_DIR / 'cassandra-logback.xml'}",
             "-Dcassandra.skip_wait_for_gossip_to_settle=0", "-Dcassandra.superuser_setup_delay_ms=0",
             "-cp", classpath(lib), "org.apache.cassandra.service.CassandraDaemon"]
        )  # fmt: skip

    return Part(
        name="cassandra",
        ports={"cql": cfg.cassandra_port, "storage": cfg.cassandra_storage_port},
        health="CQL query",
        probe=lambda: probes.cql_query(cfg.cassandra_hosts, cfg.cassandra_port),
        prepare=prepare,
        uses_java=True,
        startup_timeout=240,
        stop_timeout=60,
        installed=(lib,),
    )


def prometheus_targets_dir(cfg: Config) -> Path:
    """Drop a file-SD JSON file here to have the local Prometheus scrape a target."""
    return cfg.state_dir / "prometheus" / "targets"


def prometheus_part(cfg: Config) -> Part:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"

    def prepare(dirs: PartDirs) -> Launch:
        dirs.data.mkdir(parents=True, exist_ok=True)
        targets = prometheus_targets_dir(cfg)
        targets.mkdir(parents=True, exist_ok=True)
        conf = render("prometheus.yml", dirs.root / "prometheus.yml", port=cfg.prometheus_port, targets_dir=targets)
        return Launch(
            [binary, f"--config.file={conf}", f"--storage.tsdb.path={dirs.data}",
             f"--web.listen-address=127.0.0.1:{cfg.prometheus_port}", "--web.enable-lifecycle",
             f"--storage.tsdb.retention.time={max(1, cfg.retention_seconds // 3600)}h"]
        )  # fmt: skip

    return Part(
        name="prometheus",
        ports={"http": cfg.prometheus_port},
        health="/-/ready",
        probe=lambda: probes.http_ok(f"{cfg.prometheus_url}/-/ready"),
        prepare=prepare,
        startup_timeout=30,
        installed=(Path(binary),),
    )


def jaeger_part(cfg: Config) -> Part:
    binary = cfg.stack_cache / "jaeger" / "jaeger"

    def prepare(dirs: PartDirs) -> Launch:
        dirs.data.mkdir(parents=True, exist_ok=True)
        conf = render(
            "jaeger.yaml",
            dirs.root / "jaeger.yaml",
            port=cfg.jaeger_port,
            query_grpc_port=cfg.jaeger_query_grpc_port,
            otlp_grpc_port=cfg.otlp_grpc_port,
            otlp_http_port=cfg.otlp_http_port,
            thrift_http_port=cfg.jaeger_thrift_port,
            agent_port=cfg.jaeger_agent_port,
            health_port=cfg.jaeger_health_port,
            data_dir=dirs.data,
            retention_hours=max(1, cfg.retention_seconds // 3600),
        )
        return Launch([str(binary), "--config", str(conf)])

    return Part(
        name="jaeger",
        ports={
            "query": cfg.jaeger_port,
            "query-grpc": cfg.jaeger_query_grpc_port,
            "otlp-grpc": cfg.otlp_grpc_port,
            "otlp-http": cfg.otlp_http_port,
            "thrift-http": cfg.jaeger_thrift_port,
            "health": cfg.jaeger_health_port,
        },
        health="query API /api/services",
        probe=lambda: probes.http_ok(f"{cfg.jaeger_url}/api/services"),
        prepare=prepare,
        startup_timeout=30,
        installed=(binary,),
    )


def zipkin_part(cfg: Config) -> Part:
    """The Zipkin server, in-memory: the alternative trace backend (CLOVER_TRACE_BACKEND=zipkin)."""
    lib = cfg.stack_cache / "zipkin" / "lib"

    def prepare(dirs: PartDirs) -> Launch:
        java = str(find_java(cfg.java_home))
        jar = sorted(lib.glob("zipkin-server-*-exec.jar"))[-1]
        return Launch(
            [java, "-Xms256m", "-Xmx512m", "-jar", str(jar), "--armeria.ports[0].ip=127.0.0.1",
             f"--armeria.ports[0].port={cfg.zipkin_port}", "--logging.level.root=WARN"],
            env={"STORAGE_TYPE": "mem", "QUERY_PORT": str(cfg.zipkin_port), "COLLECTOR_ACTIVEMQ_ENABLED": "false"},
        )  # fmt: skip

    return Part(
        name="zipkin",
        ports={"http": cfg.zipkin_port},
        health="/api/v2/services",
        probe=lambda: probes.http_ok(f"{cfg.zipkin_url}/api/v2/services"),
        prepare=prepare,
        uses_java=True,
        startup_timeout=90,
        installed=(lib,),
    )


def infrastructure(cfg: Config) -> dict[str, Part]:
    """The backing services, in start order."""
    parts = [redis_part(cfg), kafka_part(cfg), cassandra_part(cfg), prometheus_part(cfg), jaeger_part(cfg)]
    return {p.name: p for p in parts}
