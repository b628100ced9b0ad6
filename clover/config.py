"""Every endpoint and local setting in one place.

Each value comes from a ``CLOVER_*`` environment variable and falls back to a local default:
all parts listen on loopback. No other module writes a host name or a port.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

# The checkout, or CLOVER_HOME where the code runs from elsewhere (a zip shipped to Spark).
CHECKOUT_DIR = Path(os.environ.get("CLOVER_HOME") or Path(__file__).resolve().parent.parent)

LOOPBACK = "127.0.0.1"

# Secrets the local stack generates (``cloverctl local up``), one file each, mode 0600, in
# ``<state dir>/secrets/``: read when the matching variable is unset.
REDIS_PASSWORD_FILE = "redis-password"
API_TOKEN_FILE = "api-token"


class ConfigError(ValueError):
    """A ``CLOVER_*`` variable holds a value that cannot be used."""


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{name}={raw!r} is outside 1..65535")
    return port


def _url_port(url: str, name: str) -> int:
    try:
        port = urlsplit(url).port
    except ValueError:
        raise ConfigError(f"{name}={url!r} has an invalid port") from None
    if port is None:
        raise ConfigError(f"{name}={url!r} must name a port")
    return port


def _host_port(value: str, name: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{name}={value!r} must look like host:port")
    if not 0 < int(port) < 65536:
        raise ConfigError(f"{name}={value!r} has a port outside 1..65535")
    return host, int(port)


@dataclass(frozen=True)
class Config:
    """Endpoints of every part, and where the local stack keeps its state."""

    redis_url: str = f"redis://{LOOPBACK}:6379/0"
    kafka_bootstrap: str = f"{LOOPBACK}:9092"
    kafka_controller_port: int = 9093
    cassandra_hosts: tuple[str, ...] = (LOOPBACK,)
    cassandra_port: int = 9042
    cassandra_storage_port: int = 7000
    # The sample chain (sdc/): "auto" runs each pod in its own network namespace as root, else
    # on its own loopback address; the subnet defaults to 10.177.0.0/24 (namespaces) or
    # 127.177.0.0/24 (loopback); the tag prefixes namespace and veth names; each pod serves its
    # Prometheus metrics on 127.0.0.1:<sdc_stats_port + pod index>. "cluster": each pod is a
    # Kubernetes pod (its own address, stats on every address at sdc_stats_port).
    sdc_mode: str = "auto"
    sdc_subnet: str | None = None
    sdc_tag: str = "sdc"
    sdc_stats_port: int = 15090
    sdc_block_seconds: int = 60
    sdc_trace_ratio: float = 1.0
    # What answers the load balancers' HTTP: "nginx" (Debian's nginx, driven by the pod's gRPC
    # control plane; the default outside a cluster) or "python" (the pod's own asyncio relay;
    # "auto" means python in a cluster, where the image has no nginx).
    sdc_dataplane: str = "auto"
    # The namespace the chain's short names (snort-ids, proxy-access-control) mean when its
    # clients run in another one (the controller in clover-system: "default"); None: as given.
    sdc_namespace: str | None = None
    # The WAF (sdc/waf): whether proxy-access-control asks modsecurity-crs about each request,
    # what it does when the WAF cannot answer ("closed": 403, "open": forward), how much of a
    # body it sends, and the Core Rule Set's mode ("anomaly" scoring or "self-contained") and
    # paranoia level (1-4); where the proxy finds the WAF (host:port; empty: the chain's
    # modsecurity-crs pod; in a cluster "modsecurity-crs.clover-gateway:80").
    waf_check: bool = False
    waf_failure_mode: str = "closed"
    waf_body_limit: int = 64 * 1024
    waf_crs_mode: str = "anomaly"
    waf_paranoia_level: int = 1
    waf_address: str = ""
    jaeger_url: str = f"http://{LOOPBACK}:16686"
    zipkin_url: str = f"http://{LOOPBACK}:9411"
    otlp_http_url: str = f"http://{LOOPBACK}:4318"
    otlp_grpc_port: int = 4317
    jaeger_query_grpc_port: int = 16685
    jaeger_thrift_port: int = 14268
    jaeger_agent_port: int = 6831  # UDP, Thrift compact (the Jaeger agent's emitBatch)
    jaeger_health_port: int = 13133
    trace_backend: str = "jaeger"
    prometheus_url: str = f"http://{LOOPBACK}:9090"
    controller_url: str = f"http://{LOOPBACK}:8000"
    collector_grpc: str = f"{LOOPBACK}:50054"
    validation_grpc: str = f"{LOOPBACK}:50057"
    jmeter_home: Path | None = None
    jmeter_slaves: tuple[str, ...] = ()
    jmeter_rmi_port: int = 1099
    # The address JMeter names in its RMI stubs: loopback locally, the pod IP in a cluster.
    jmeter_rmi_host: str = LOOPBACK
    state_dir: Path = field(default_factory=lambda: CHECKOUT_DIR / ".clover")
    stack_cache: Path = field(default_factory=lambda: CHECKOUT_DIR / "stack" / "cache")
    java_home: str | None = None
    api_token: str | None = None
    api_max_body_bytes: int = 4 * 1024 * 1024  # the controller refuses larger request bodies (413)
    cassandra_replication: int = 1
    retention_seconds: int = 7 * 24 * 3600
    clovisor_jaeger_collector: str | None = None
    clovisor_jaeger_agent: str | None = None
    clovisor_metrics_port: int = 9470
    # Where /metrics listens: loopback unless configured (the DaemonSet gives the pod's own address).
    clovisor_metrics_host: str = LOOPBACK
    # Protocol plugins run inside Clovisor (as root): only files from this root-owned directory.
    clovisor_plugin_dir: Path = Path("/etc/clover/clovisor-plugins")
    bucket_seconds: int = 10
    # The local one-node Kubernetes (stack/cluster): the node's address, added to lo (its API
    # server, kubelet and NodePorts listen there), the pods' and the Services' networks.
    cluster_node_ip: str = "10.251.0.1"
    cluster_pod_cidr: str = "10.244.0.0/24"
    cluster_service_cidr: str = "10.96.0.0/24"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Read the configuration from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        d = cls()
        hosts = env.get("CLOVER_CASSANDRA_HOSTS")
        backend = env.get("CLOVER_TRACE_BACKEND", d.trace_backend)
        if backend not in ("jaeger", "zipkin"):
            raise ConfigError(f"CLOVER_TRACE_BACKEND={backend!r} must be jaeger or zipkin")
        state_dir = state_dir_of(env)
        cfg = cls(
            redis_url=_redis_url(env, env.get("CLOVER_REDIS_URL", d.redis_url), state_dir),
            kafka_bootstrap=env.get("CLOVER_KAFKA_BOOTSTRAP", d.kafka_bootstrap),
            kafka_controller_port=_port(env, "CLOVER_KAFKA_CONTROLLER_PORT", d.kafka_controller_port),
            cassandra_hosts=tuple(h.strip() for h in hosts.split(",") if h.strip()) if hosts else d.cassandra_hosts,
            cassandra_port=_port(env, "CLOVER_CASSANDRA_PORT", d.cassandra_port),
            cassandra_storage_port=_port(env, "CLOVER_CASSANDRA_STORAGE_PORT", d.cassandra_storage_port),
            sdc_mode=_sdc_mode(env),
            sdc_subnet=_sdc_subnet(env),
            sdc_tag=_sdc_tag(env, d.sdc_tag),
            sdc_stats_port=_port(env, "CLOVER_SDC_STATS_PORT", d.sdc_stats_port),
            sdc_block_seconds=_positive(env, "CLOVER_SDC_BLOCK_SECONDS", d.sdc_block_seconds),
            sdc_trace_ratio=_ratio(env, "CLOVER_SDC_TRACE_RATIO", d.sdc_trace_ratio),
            sdc_dataplane=_choice(env, "CLOVER_SDC_DATAPLANE", d.sdc_dataplane, SDC_DATAPLANES),
            waf_check=_choice(env, "CLOVER_WAF", "on" if d.waf_check else "off", WAF_CHECK_VALUES) == "on",
            waf_failure_mode=_choice(env, "CLOVER_WAF_FAILURE_MODE", d.waf_failure_mode, WAF_FAILURE_MODES),
            waf_body_limit=_positive(env, "CLOVER_WAF_BODY_LIMIT", d.waf_body_limit),
            waf_crs_mode=_choice(env, "CLOVER_WAF_CRS_MODE", d.waf_crs_mode, WAF_CRS_MODES),
            waf_paranoia_level=_paranoia_level(env, d.waf_paranoia_level),
            waf_address=env.get("CLOVER_WAF_ADDRESS") or d.waf_address,
            sdc_namespace=_sdc_namespace(env),
            jaeger_url=env.get("CLOVER_JAEGER_URL", d.jaeger_url).rstrip("/"),
            zipkin_url=env.get("CLOVER_ZIPKIN_URL", d.zipkin_url).rstrip("/"),
            otlp_http_url=env.get("CLOVER_OTLP_HTTP_URL", d.otlp_http_url).rstrip("/"),
            otlp_grpc_port=_port(env, "CLOVER_OTLP_GRPC_PORT", d.otlp_grpc_port),
            jaeger_query_grpc_port=_port(env, "CLOVER_JAEGER_QUERY_GRPC_PORT", d.jaeger_query_grpc_port),
            jaeger_thrift_port=_port(env, "CLOVER_JAEGER_THRIFT_PORT", d.jaeger_thrift_port),
            jaeger_agent_port=_port(env, "CLOVER_JAEGER_AGENT_PORT", d.jaeger_agent_port),
            jaeger_health_port=_port(env, "CLOVER_JAEGER_HEALTH_PORT", d.jaeger_health_port),
            trace_backend=backend,
            prometheus_url=env.get("CLOVER_PROMETHEUS_URL", d.prometheus_url).rstrip("/"),
            controller_url=env.get("CLOVER_CONTROLLER_URL", d.controller_url).rstrip("/"),
            collector_grpc=env.get("CLOVER_COLLECTOR_GRPC", d.collector_grpc),
            validation_grpc=env.get("CLOVER_VALIDATION_GRPC", d.validation_grpc),
            jmeter_home=Path(env["CLOVER_JMETER_HOME"]).resolve() if env.get("CLOVER_JMETER_HOME") else None,
            jmeter_slaves=_host_ports(env, "CLOVER_JMETER_SLAVES"),
            jmeter_rmi_port=_port(env, "CLOVER_JMETER_RMI_PORT", d.jmeter_rmi_port),
            jmeter_rmi_host=env.get("CLOVER_JMETER_RMI_HOST") or d.jmeter_rmi_host,
            state_dir=state_dir,
            stack_cache=Path(env["CLOVER_STACK_CACHE"]).resolve() if env.get("CLOVER_STACK_CACHE") else d.stack_cache,
            java_home=env.get("CLOVER_JAVA_HOME") or env.get("JAVA_HOME") or None,
            api_token=env.get("CLOVER_API_TOKEN") or read_secret(secret_file(state_dir, API_TOKEN_FILE)),
            api_max_body_bytes=_positive(env, "CLOVER_API_MAX_BODY_BYTES", d.api_max_body_bytes),
            cassandra_replication=_positive(env, "CLOVER_CASSANDRA_REPLICATION", d.cassandra_replication),
            retention_seconds=_positive(env, "CLOVER_RETENTION_SECONDS", d.retention_seconds),
            bucket_seconds=_positive(env, "CLOVER_BUCKET_SECONDS", d.bucket_seconds),
            **_cluster_networks(env, d),
            clovisor_metrics_port=_port(env, "CLOVER_CLOVISOR_METRICS_PORT", d.clovisor_metrics_port),
            clovisor_metrics_host=env.get("CLOVER_CLOVISOR_METRICS_HOST") or d.clovisor_metrics_host,
            clovisor_jaeger_collector=env.get("CLOVER_CLOVISOR_JAEGER_COLLECTOR") or d.clovisor_jaeger_collector,
            clovisor_jaeger_agent=env.get("CLOVER_CLOVISOR_JAEGER_AGENT") or d.clovisor_jaeger_agent,
            clovisor_plugin_dir=_absolute(env, "CLOVER_CLOVISOR_PLUGIN_DIR", d.clovisor_plugin_dir),
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ConfigError naming the first endpoint that cannot be parsed."""
        self.redis_port  # noqa: B018 - each property parses its URL
        self.kafka_port  # noqa: B018
        self.jaeger_port  # noqa: B018
        self.zipkin_port  # noqa: B018
        self.otlp_http_port  # noqa: B018
        self.prometheus_port  # noqa: B018
        self.controller_port  # noqa: B018
        _host_port(self.collector_grpc, "CLOVER_COLLECTOR_GRPC")
        if self.clovisor_jaeger_collector:
            _host_port(self.clovisor_jaeger_collector.split("://")[-1], "CLOVER_CLOVISOR_JAEGER_COLLECTOR")
        if self.clovisor_jaeger_agent:
            _host_port(self.clovisor_jaeger_agent, "CLOVER_CLOVISOR_JAEGER_AGENT")
        _host_port(self.validation_grpc, "CLOVER_VALIDATION_GRPC")
        if self.waf_address:
            _host_port(self.waf_address, "CLOVER_WAF_ADDRESS")

    @property
    def redis_port(self) -> int:
        return _url_port(self.redis_url, "CLOVER_REDIS_URL")

    @property
    def redis_password(self) -> str | None:
        """The password ``redis_url`` carries (CLOVER_REDIS_PASSWORD, or the local stack's)."""
        password = urlsplit(self.redis_url).password
        return unquote(password) if password else None

    @property
    def redis_address(self) -> str:
        """``redis_url`` with its password masked: what a message or a log line may show."""
        parts = urlsplit(self.redis_url)
        if parts.password is None:
            return self.redis_url
        user, _, _ = parts.netloc.rpartition("@")[0].partition(":")
        return urlunsplit(parts._replace(netloc=f"{user}:***@{parts.netloc.rpartition('@')[2]}"))

    @property
    def kafka_port(self) -> int:
        first = self.kafka_bootstrap.split(",")[0]
        return _host_port(first, "CLOVER_KAFKA_BOOTSTRAP")[1]

    @property
    def jaeger_port(self) -> int:
        return _url_port(self.jaeger_url, "CLOVER_JAEGER_URL")

    @property
    def zipkin_port(self) -> int:
        return _url_port(self.zipkin_url, "CLOVER_ZIPKIN_URL")

    @property
    def otlp_http_port(self) -> int:
        return _url_port(self.otlp_http_url, "CLOVER_OTLP_HTTP_URL")

    @property
    def prometheus_port(self) -> int:
        return _url_port(self.prometheus_url, "CLOVER_PROMETHEUS_URL")

    @property
    def controller_port(self) -> int:
        return _url_port(self.controller_url, "CLOVER_CONTROLLER_URL")

    @property
    def jmeter_dir(self) -> Path:
        """The Apache JMeter home (bin/, lib/, lib/ext/): CLOVER_JMETER_HOME, else the one
        ``make setup`` lays out in the stack cache."""
        return self.jmeter_home if self.jmeter_home is not None else self.stack_cache / "jmeter" / "home"

    @property
    def trace_query_url(self) -> str:
        """Base URL of the configured trace backend's query API."""
        return self.jaeger_url if self.trace_backend == "jaeger" else self.zipkin_url


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def state_dir_of(env: Mapping[str, str]) -> Path:
    """The state directory ``env`` names (CLOVER_STATE_DIR), else ``.clover/`` in the checkout."""
    return Path(env["CLOVER_STATE_DIR"]).resolve() if env.get("CLOVER_STATE_DIR") else CHECKOUT_DIR / ".clover"


def secret_file(state_dir: Path, name: str) -> Path:
    """Where the local stack keeps the secret ``name`` (REDIS_PASSWORD_FILE, API_TOKEN_FILE)."""
    return state_dir / "secrets" / name


def read_secret(path: Path) -> str | None:
    """A secret file's value; None when there is no such file."""
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read ({exc.strerror})") from None
    return value or None


def with_password(url: str, password: str) -> str:
    """``url`` carrying ``password`` (any user name in it is kept), so that every
    ``redis.Redis.from_url(cfg.redis_url)`` authenticates."""
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{hostport}"))


def _redis_url(env: Mapping[str, str], url: str, state_dir: Path) -> str:
    """The Redis URL with its password: CLOVER_REDIS_PASSWORD, else one the URL holds, else the
    local stack's (``<state dir>/secrets/redis-password``), else none."""
    _url_port(url, "CLOVER_REDIS_URL")  # checked as given: a message never shows the password added below
    password = env.get("CLOVER_REDIS_PASSWORD")
    if not password and urlsplit(url).password is None:
        password = read_secret(secret_file(state_dir, REDIS_PASSWORD_FILE))
    return with_password(url, password) if password else url


def _absolute(env: Mapping[str, str], name: str, default: Path) -> Path:
    raw = env.get(name)
    if not raw:
        return default
    if not raw.startswith("/"):
        raise ConfigError(f"{name}={raw!r} must be an absolute path")
    return Path(raw)


def _host_ports(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of host:port (the port may be left out), e.g. JMeter servers."""
    raw = env.get(name, "")
    items = tuple(item.strip() for item in raw.split(",") if item.strip())
    for item in items:
        if ":" in item:
            _host_port(item, name)
    return items


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive")
    return value


def _cluster_networks(env: Mapping[str, str], d: Config) -> dict[str, str]:
    """The local cluster's node address, pod and Service networks: private IPv4, not loopback,
    none inside another."""
    node_raw = env.get("CLOVER_CLUSTER_NODE_IP") or d.cluster_node_ip
    try:
        node = ipaddress.IPv4Address(node_raw)
    except ValueError:
        raise ConfigError(f"CLOVER_CLUSTER_NODE_IP={node_raw!r} is not an IPv4 address") from None
    if node.is_loopback or not node.is_private:
        raise ConfigError(f"CLOVER_CLUSTER_NODE_IP={node_raw!r} must be a private address outside 127.0.0.0/8")
    nets = {}
    for name, default in (("POD_CIDR", d.cluster_pod_cidr), ("SERVICE_CIDR", d.cluster_service_cidr)):
        raw = env.get(f"CLOVER_CLUSTER_{name}") or default
        try:
            net = ipaddress.IPv4Network(raw, strict=True)
        except ValueError as exc:
            raise ConfigError(f"CLOVER_CLUSTER_{name}={raw!r} is not an IPv4 network ({exc})") from None
        if net.is_loopback or not net.is_private or not 16 <= net.prefixlen <= 28:
            raise ConfigError(f"CLOVER_CLUSTER_{name}={raw!r} must be a private network from /16 to /28")
        if node in net:
            raise ConfigError(f"CLOVER_CLUSTER_{name}={raw!r} contains the node address {node}")
        nets[name] = net
    if nets["POD_CIDR"].overlaps(nets["SERVICE_CIDR"]):
        raise ConfigError("CLOVER_CLUSTER_POD_CIDR and CLOVER_CLUSTER_SERVICE_CIDR overlap")
    return {
        "cluster_node_ip": str(node),
        "cluster_pod_cidr": str(nets["POD_CIDR"]),
        "cluster_service_cidr": str(nets["SERVICE_CIDR"]),
    }


SDC_MODES = ("auto", "netns", "loopback", "cluster")
SDC_DATAPLANES = ("auto", "nginx", "python")


def _sdc_mode(env: Mapping[str, str]) -> str:
    mode = env.get("CLOVER_SDC_MODE") or "auto"
    if mode not in SDC_MODES:
        raise ConfigError(f"CLOVER_SDC_MODE={mode!r} must be one of {', '.join(SDC_MODES)}")
    return mode


def _sdc_namespace(env: Mapping[str, str]) -> str | None:
    namespace = env.get("CLOVER_SDC_NAMESPACE") or None
    if namespace is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", namespace):
        raise ConfigError(f"CLOVER_SDC_NAMESPACE={namespace!r} is not a Kubernetes namespace name")
    return namespace


def _sdc_subnet(env: Mapping[str, str]) -> str | None:
    raw = env.get("CLOVER_SDC_SUBNET")
    if not raw:
        return None
    try:
        net = ipaddress.IPv4Network(raw, strict=True)
    except ValueError as exc:
        raise ConfigError(f"CLOVER_SDC_SUBNET={raw!r} is not an IPv4 network ({exc})") from None
    if net.prefixlen > 24:
        raise ConfigError(f"CLOVER_SDC_SUBNET={raw!r} must hold at least 256 addresses (a /24 or larger)")
    return str(net)


def _sdc_tag(env: Mapping[str, str], default: str) -> str:
    tag = env.get("CLOVER_SDC_TAG") or default
    if not re.fullmatch(r"[a-z][a-z0-9]{0,6}", tag):
        raise ConfigError(f"CLOVER_SDC_TAG={tag!r} must be 1-7 lower-case letters or digits, starting with a letter")
    return tag


# CLOVER_WAF (on|off), CLOVER_WAF_FAILURE_MODE, CLOVER_WAF_BODY_LIMIT (bytes), CLOVER_WAF_CRS_MODE,
# CLOVER_WAF_PARANOIA_LEVEL (1-4), CLOVER_WAF_ADDRESS (host:port).
WAF_CHECK_VALUES = ("on", "off")
WAF_FAILURE_MODES = ("closed", "open")
WAF_CRS_MODES = ("anomaly", "self-contained")


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(allowed)}")
    return value


def _paranoia_level(env: Mapping[str, str], default: int) -> int:
    level = _positive(env, "CLOVER_WAF_PARANOIA_LEVEL", default)
    if level > 4:
        raise ConfigError(f"CLOVER_WAF_PARANOIA_LEVEL={level} must be 1, 2, 3 or 4")
    return level


def _ratio(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}={raw!r} must be between 0 and 1")
    return value
