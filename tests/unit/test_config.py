"""Configuration: every endpoint from CLOVER_* variables, loopback defaults, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from clover.config import CHECKOUT_DIR, Config, ConfigError
from stack import secrets


def test_defaults_are_loopback_endpoints(tmp_path: Path) -> None:
    assert Config.from_env({}).state_dir == CHECKOUT_DIR / ".clover"
    cfg = Config.from_env({"CLOVER_STATE_DIR": str(tmp_path)})  # a state directory without secrets
    assert cfg.redis_url == "redis://127.0.0.1:6379/0"
    assert cfg.kafka_bootstrap == "127.0.0.1:9092"
    assert cfg.cassandra_hosts == ("127.0.0.1",)
    assert (cfg.cassandra_port, cfg.prometheus_port, cfg.jaeger_port) == (9042, 9090, 16686)
    assert cfg.api_token is None and cfg.redis_password is None
    assert cfg.clovisor_plugin_dir == Path("/etc/clover/clovisor-plugins")
    assert (cfg.clovisor_metrics_host, cfg.clovisor_metrics_port) == ("127.0.0.1", 9470)


def test_the_local_stacks_secrets_are_read_from_the_state_directory(tmp_path: Path) -> None:
    env = {"CLOVER_STATE_DIR": str(tmp_path), "CLOVER_REDIS_URL": "redis://127.0.0.1:16379/0"}
    made = secrets.ensure(tmp_path, env)
    assert sorted(p.name for p in made) == ["api-token", "redis-password"]
    assert [oct(p.stat().st_mode & 0o777) for p in made] == ["0o600", "0o600"]
    assert oct((tmp_path / "secrets").stat().st_mode & 0o777) == "0o700"
    password = (tmp_path / "secrets" / "redis-password").read_text().strip()
    cfg = Config.from_env(env)
    assert cfg.redis_url == f"redis://:{password}@127.0.0.1:16379/0" and cfg.redis_password == password
    assert cfg.redis_address == "redis://:***@127.0.0.1:16379/0" and password not in cfg.redis_address
    assert cfg.api_token == (tmp_path / "secrets" / "api-token").read_text().strip()
    assert secrets.ensure(tmp_path, env) == []  # kept: made once
    # The variables win over the files; a password is quoted into the URL and read back as it was.
    chosen = Config.from_env({**env, "CLOVER_REDIS_PASSWORD": "p@ss:w/rd", "CLOVER_API_TOKEN": "t"})
    assert chosen.redis_url == "redis://:p%40ss%3Aw%2Frd@127.0.0.1:16379/0"
    assert (chosen.redis_password, chosen.api_token) == ("p@ss:w/rd", "t")
    acl = Config.from_env({**env, "CLOVER_REDIS_URL": "redis://clover:own@10.0.0.5:6379/1"})
    assert acl.redis_password == "own" and acl.redis_address == "redis://clover:***@10.0.0.5:6379/1"
    # With the variables set, `local up` makes no file for them.
    other = tmp_path / "other"
    assert secrets.ensure(other, {"CLOVER_REDIS_PASSWORD": "x", "CLOVER_API_TOKEN": "y"}) == []


def test_environment_overrides_every_endpoint() -> None:
    cfg = Config.from_env(
        {
            "CLOVER_REDIS_URL": "redis://10.0.0.5:7000/2",
            "CLOVER_KAFKA_BOOTSTRAP": "kafka-0:9092,kafka-1:9092",
            "CLOVER_CASSANDRA_HOSTS": "c1, c2",
            "CLOVER_CASSANDRA_PORT": "9142",
            "CLOVER_JAEGER_URL": "http://tracing.istio-system:16686/",
            "CLOVER_PROMETHEUS_URL": "http://prometheus.istio-system:9090",
            "CLOVER_CONTROLLER_URL": "http://controller:80",
            "CLOVER_STATE_DIR": "/tmp/clover-state",
            "CLOVER_API_TOKEN": "s3cret",
            "CLOVER_TRACE_BACKEND": "zipkin",
            "CLOVER_CLOVISOR_JAEGER_COLLECTOR": "jaeger.clover-system:14268",
            "CLOVER_CLOVISOR_JAEGER_AGENT": "jaeger.clover-system:6831",
        }
    )
    assert cfg.redis_port == 7000
    assert cfg.kafka_port == 9092
    assert cfg.cassandra_hosts == ("c1", "c2")
    assert cfg.cassandra_port == 9142
    assert cfg.jaeger_url == "http://tracing.istio-system:16686"
    assert cfg.controller_port == 80
    assert cfg.state_dir == Path("/tmp/clover-state")
    assert cfg.api_token == "s3cret"
    assert cfg.trace_query_url == cfg.zipkin_url
    assert cfg.clovisor_jaeger_collector == "jaeger.clover-system:14268"  # the DaemonSet's (it was never read)
    assert cfg.clovisor_jaeger_agent == "jaeger.clover-system:6831"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CLOVER_CASSANDRA_PORT": "ninety"}, "CLOVER_CASSANDRA_PORT='ninety' is not a port number"),
        ({"CLOVER_CASSANDRA_PORT": "70000"}, "CLOVER_CASSANDRA_PORT='70000' is outside 1..65535"),
        ({"CLOVER_REDIS_URL": "redis://localhost/0"}, "CLOVER_REDIS_URL='redis://localhost/0' must name a port"),
        (
            {"CLOVER_REDIS_URL": "redis://localhost/0", "CLOVER_REDIS_PASSWORD": "hunter2"},
            "CLOVER_REDIS_URL='redis://localhost/0' must name a port",
        ),
        ({"CLOVER_KAFKA_BOOTSTRAP": "kafka"}, "CLOVER_KAFKA_BOOTSTRAP='kafka' must look like host:port"),
        ({"CLOVER_TRACE_BACKEND": "tempo"}, "CLOVER_TRACE_BACKEND='tempo' must be jaeger or zipkin"),
        ({"CLOVER_RETENTION_SECONDS": "-5"}, "CLOVER_RETENTION_SECONDS='-5' must be positive"),
        ({"CLOVER_CLOVISOR_PLUGIN_DIR": "plugins"}, "CLOVER_CLOVISOR_PLUGIN_DIR='plugins' must be an absolute path"),
        ({"CLOVER_CLOVISOR_JAEGER_AGENT": "jaeger"}, "CLOVER_CLOVISOR_JAEGER_AGENT='jaeger' must look like host:port"),
        ({"CLOVER_SDC_DATAPLANE": "envoy"}, "CLOVER_SDC_DATAPLANE='envoy' must be one of auto, nginx, python"),
    ],
)
def test_a_bad_value_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Config.from_env(env)
    assert str(err.value) == message
