"""Configuration: every endpoint from CLOVER_* variables, loopback defaults, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from clover.config import CHECKOUT_DIR, Config, ConfigError


def test_defaults_are_loopback_endpoints() -> None:
    cfg = Config.from_env({})
    assert cfg.redis_url == "redis://127.0.0.1:6379/0"
    assert cfg.kafka_bootstrap == "127.0.0.1:9092"
    assert cfg.cassandra_hosts == ("127.0.0.1",)
    assert (cfg.cassandra_port, cfg.prometheus_port, cfg.jaeger_port) == (9042, 9090, 16686)
    assert cfg.state_dir == CHECKOUT_DIR / ".clover"
    assert cfg.api_token is None


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


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CLOVER_CASSANDRA_PORT": "ninety"}, "CLOVER_CASSANDRA_PORT='ninety' is not a port number"),
        ({"CLOVER_CASSANDRA_PORT": "70000"}, "CLOVER_CASSANDRA_PORT='70000' is outside 1..65535"),
        ({"CLOVER_REDIS_URL": "redis://localhost/0"}, "CLOVER_REDIS_URL='redis://localhost/0' must name a port"),
        ({"CLOVER_KAFKA_BOOTSTRAP": "kafka"}, "CLOVER_KAFKA_BOOTSTRAP='kafka' must look like host:port"),
        ({"CLOVER_TRACE_BACKEND": "tempo"}, "CLOVER_TRACE_BACKEND='tempo' must be jaeger or zipkin"),
        ({"CLOVER_RETENTION_SECONDS": "-5"}, "CLOVER_RETENTION_SECONDS='-5' must be positive"),
    ],
)
def test_a_bad_value_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Config.from_env(env)
    assert str(err.value) == message
