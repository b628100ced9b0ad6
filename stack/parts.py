"""The backing services of the local stack: how each is configured, started and probed.

A part's files live under ``<state dir>/<part>/``: its rendered configuration, ``data/`` and
``<part>.log``. Configuration templates are in ``stack/conf/``; the JVM artifacts and the
Jaeger binary are in the stack cache that ``make setup`` fills.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import string
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from clover.config import LOOPBACK, Config
from stack import probes
from stack.hostsetup import HostSetup
from stack.java import find_java
from stack.secrets import write_private

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
class Addresses:
    """Where a backing service listens (``bind``) and the address it gives its clients and
    peers (``own``): loopback on this machine; in a container (``stack/images/entry.py``), every
    interface and the pod's address."""

    bind: str = LOOPBACK
    own: str = LOOPBACK


LOCAL = Addresses()


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
    # Where the part keeps its files, relative to the state directory (default: its name).
    home: str = ""
    # Start the parts after this one only once it is ready (they cannot start without it).
    ready_before_next: bool = False
    # Shared by the parts that need it: set up before the first starts, undone after the last stops.
    host_setup: HostSetup | None = None
    # Run before the part is sent SIGTERM (e.g. containerd stops its containers while it still can).
    before_stop: Callable[[], None] | None = None

    @property
    def main_port(self) -> int:
        """The part's first port (0 for a part that listens on none of its own)."""
        return next(iter(self.ports.values()), 0)


def render(template: str, target: Path, private: bool = False, **values: object) -> Path:
    """Write ``stack/conf/<template>`` to ``target`` with ``$name`` placeholders filled;
    ``private``: readable by its owner only (it holds a secret)."""
    text = string.Template((CONF_DIR / template).read_text()).substitute({k: str(v) for k, v in values.items()})
    target.parent.mkdir(parents=True, exist_ok=True)
    if private:
        write_private(target, text)
    else:
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


def redis_config_string(value: str) -> str:
    """``value`` as a double-quoted redis.conf argument."""
    escaped = "".join(
        "\\" + c if c in '"\\' else c if " " <= c <= "~" else "".join(f"\\x{b:02x}" for b in c.encode()) for c in value
    )
    return f'"{escaped}"'


def redis_part(cfg: Config, at: Addresses = LOCAL) -> Part:
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    password = cfg.redis_password

    def prepare(dirs: PartDirs) -> Launch:
        dirs.data.mkdir(parents=True, exist_ok=True)
        requirepass = f"requirepass {redis_config_string(password)}" if password else ""
        # Protected mode refuses every client but loopback's when there is no password.
        protected = "yes" if at.bind == LOOPBACK else "no"
        conf = render("redis.conf", dirs.root / "redis.conf", private=True, port=cfg.redis_port, data_dir=dirs.data,
                      requirepass=requirepass, bind_host=at.bind, protected_mode=protected)  # fmt: skip
        return Launch([server, str(conf)])

    def probe() -> None:
        probes.redis_ping(cfg.redis_url)
        if password:
            probes.redis_refuses_anonymous(cfg.redis_url)

    return Part(
        name="redis",
        ports={"redis": cfg.redis_port},
        health="PING (with the password)" if password else "PING",
        probe=probe,
        prepare=prepare,
        startup_timeout=20,
        installed=(Path(server),),
    )


def new_cluster_id(random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid form).

    The first character is never ``-``: Kafka's StorageTool would read such an id as an option
    (``--cluster-id/-t: expected one argument``). Clearing the first byte's top bit keeps it in
    ``A``..``f``; the other 122 bits stay random."""
    raw = bytearray(random_bytes(16))
    raw[0] &= 0x7F
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def usable_cluster_id(value: str) -> bool:
    """Whether ``value`` is an id StorageTool accepts: 16 bytes in URL-safe base64, not starting with ``-``."""
    return re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{20}[AQgw]", value) is not None


def formatted_cluster_id(dirs: PartDirs) -> str | None:
    """The cluster id a formatted Kafka log directory holds (None before it is formatted)."""
    meta = dirs.data / "meta.properties"
    if not meta.exists():
        return None
    for line in meta.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "cluster.id":
            return value.strip()
    return None


def kafka_cluster_id(dirs: PartDirs, random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """The KRaft cluster id, made once per state directory and kept in ``<part>/cluster-id``.

    A formatted log directory's own id wins (Kafka checks it against nothing else, and changing
    it would orphan the data). Before formatting, a kept id StorageTool refuses (one made by an
    older Clover could start with ``-``) is replaced: the broker never ran, its data is empty."""
    id_file = dirs.root / "cluster-id"
    kept = id_file.read_text().strip() if id_file.exists() else None
    wanted = formatted_cluster_id(dirs)
    if wanted is None:
        if kept is not None and usable_cluster_id(kept):
            return kept
        wanted = new_cluster_id(random_bytes)
    if kept != wanted:
        draft = id_file.with_suffix(f".{os.getpid()}")
        draft.write_text(wanted)
        draft.replace(id_file)  # a concurrent reader never sees a half-written id
    return wanted


def kafka_part(cfg: Config, at: Addresses = LOCAL) -> Part:
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
            bind_host=at.bind,
            own_host=at.own,
        )
        log4j = f"-Dlog4j2.configurationFile={CONF_DIR / 'kafka-log4j2.properties'}"
        if not (dirs.data / "meta.properties").exists():
            formatted = subprocess.run(
                [java, log4j, "-cp", classpath(lib), "kafka.tools.StorageTool", "format",
                 f"--cluster-id={kafka_cluster_id(dirs)}", "--config", str(props), "--ignore-formatted"],
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


def cassandra_part(cfg: Config, at: Addresses = LOCAL) -> Part:
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
            bind_host=at.bind,
            own_host=at.own,
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


def prometheus_part(cfg: Config, at: Addresses = LOCAL) -> Part:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"

    def prepare(dirs: PartDirs) -> Launch:
        dirs.data.mkdir(parents=True, exist_ok=True)
        targets = prometheus_targets_dir(cfg)
        targets.mkdir(parents=True, exist_ok=True)
        conf = render("prometheus.yml", dirs.root / "prometheus.yml", port=cfg.prometheus_port, targets_dir=targets)
        return Launch(
            [binary, f"--config.file={conf}", f"--storage.tsdb.path={dirs.data}",
             f"--web.listen-address={at.bind}:{cfg.prometheus_port}", "--web.enable-lifecycle",
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


def jaeger_part(cfg: Config, at: Addresses = LOCAL) -> Part:
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
            bind_host=at.bind,
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


def zipkin_part(cfg: Config, at: Addresses = LOCAL) -> Part:
    """The Zipkin server, in-memory: the alternative trace backend (CLOVER_TRACE_BACKEND=zipkin)."""
    lib = cfg.stack_cache / "zipkin" / "lib"

    def prepare(dirs: PartDirs) -> Launch:
        java = str(find_java(cfg.java_home))
        jar = sorted(lib.glob("zipkin-server-*-exec.jar"))[-1]
        return Launch(
            [java, "-Xms256m", "-Xmx512m", "-jar", str(jar), f"--armeria.ports[0].ip={at.bind}",
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


def infrastructure(cfg: Config, at: Addresses = LOCAL) -> dict[str, Part]:
    """The backing services, in start order."""
    parts = [redis_part(cfg, at), kafka_part(cfg, at), cassandra_part(cfg, at), prometheus_part(cfg, at),
             jaeger_part(cfg, at)]  # fmt: skip
    return {p.name: p for p in parts}
