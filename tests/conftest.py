"""Shared test setup.

The suite runs its own stack, on ports of its own and in a state directory of its own, so a
demo stack on the default ports can keep running beside it. Tests are marked by folder:
``tests/unit`` -> unit, ``tests/integration`` -> integration, ``tests/e2e`` -> e2e.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from cassandra.cluster import Cluster

ROOT = Path(__file__).resolve().parent.parent

# CLOVER_TEST_PORT_OFFSET lets several suites run side by side (each with its own stack).
_OFFSET = int(os.environ.get("CLOVER_TEST_PORT_OFFSET", "0"))


def _port(base: int) -> str:
    return str(base + _OFFSET)


TEST_ENV = {
    "CLOVER_STATE_DIR": str(ROOT / (".clover-test" + (f"-{_OFFSET}" if _OFFSET else ""))),
    "CLOVER_REDIS_URL": f"redis://127.0.0.1:{_port(16379)}/0",
    "CLOVER_KAFKA_BOOTSTRAP": f"127.0.0.1:{_port(19092)}",
    "CLOVER_KAFKA_CONTROLLER_PORT": _port(19093),
    "CLOVER_CASSANDRA_HOSTS": "127.0.0.1",
    "CLOVER_CASSANDRA_PORT": _port(19042),
    "CLOVER_CASSANDRA_STORAGE_PORT": _port(17000),
    "CLOVER_PROMETHEUS_URL": f"http://127.0.0.1:{_port(19090)}",
    "CLOVER_JAEGER_URL": f"http://127.0.0.1:{_port(26686)}",
    "CLOVER_JAEGER_QUERY_GRPC_PORT": _port(26685),
    "CLOVER_JAEGER_THRIFT_PORT": _port(24268),
    "CLOVER_JAEGER_AGENT_PORT": _port(16831),
    "CLOVER_JAEGER_HEALTH_PORT": _port(23133),
    "CLOVER_OTLP_HTTP_URL": f"http://127.0.0.1:{_port(14318)}",
    "CLOVER_OTLP_GRPC_PORT": _port(14317),
    "CLOVER_ZIPKIN_URL": f"http://127.0.0.1:{_port(19411)}",
    "CLOVER_CONTROLLER_URL": f"http://127.0.0.1:{_port(18000)}",
    "CLOVER_LOG_STORE_URL": f"http://127.0.0.1:{_port(19428)}",
    "CLOVER_LOG_SHIPPER_METRICS_PORT": _port(18889),
    "CLOVER_COLLECTOR_GRPC": f"127.0.0.1:{_port(50154)}",
}
# Clovisor's plugins: from a directory of the test stack's (root-owned, as the tests run as root).
TEST_ENV["CLOVER_CLOVISOR_PLUGIN_DIR"] = str(Path(TEST_ENV["CLOVER_STATE_DIR"]) / "clovisor-plugins")
if _OFFSET:
    # Beside another suite, the sample chain's namespaces, subnet and stats ports and the JMeter
    # servers' RMI ports are this suite's own too.
    TEST_ENV.update({
        "CLOVER_SDC_TAG": f"t{_OFFSET % 1_000_000}",
        "CLOVER_SDC_SUBNET": f"10.{180 + _OFFSET // 100 % 70}.{_OFFSET % 100}.0/24",
        "CLOVER_SDC_STATS_PORT": _port(15090),
        "CLOVER_JMETER_RMI_PORT": _port(1099),
    })  # fmt: skip
for _name, _value in TEST_ENV.items():
    os.environ.setdefault(_name, _value)

from clover import schema  # noqa: E402
from clover.config import Config  # noqa: E402  (reads the environment set above)
from stack.catalogue import local_stack  # noqa: E402
from stack.launcher import Launcher  # noqa: E402
from stack.secrets import local_config  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in ("unit", "integration", "e2e"):
            item.add_marker(getattr(pytest.mark, folder))


@pytest.fixture(scope="session")
def cfg() -> Config:
    """The test stack's configuration, with the secrets `cloverctl local up` makes (the Redis
    password, the API token) made first: the stack runs as a default install does."""
    return local_config()


@pytest.fixture(scope="session")
def stack(cfg: Config) -> Iterator[Launcher]:
    """The local stack every integration test shares: started empty once per session.

    CLOVER_TEST_KEEP_STACK=1 keeps it (and its data) running after the session, and reuses
    a running one, which makes repeated local runs fast."""
    launcher = local_stack(cfg)
    keep = os.environ.get("CLOVER_TEST_KEEP_STACK") == "1"
    launcher.up(fresh=not keep, progress=lambda m: print(f"[stack] {m}"))
    yield launcher
    if not keep:
        launcher.down()


@pytest.fixture(scope="session")
def cassandra(stack: Launcher, cfg: Config) -> Iterator[Any]:
    """A driver session on the visibility keyspace (schema applied)."""
    cluster = Cluster(list(cfg.cassandra_hosts), port=cfg.cassandra_port)
    session = cluster.connect()
    schema.apply_schema(session, cfg)
    session.set_keyspace(schema.KEYSPACE)
    yield session
    cluster.shutdown()


@pytest.fixture(scope="session")
def store(stack: Launcher, cfg: Config) -> redis.Redis:
    return redis.Redis.from_url(cfg.redis_url, decode_responses=True)


@pytest.fixture(scope="session")
def ingest(stack: Launcher, cassandra: Any) -> Iterator[Launcher]:
    """The streaming ingest job, running for the whole session."""
    stack.up(["ingest"])
    yield stack
    stack.down(["ingest"])
