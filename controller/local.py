"""The controller as a part of the local stack (``cloverctl local up controller``)."""

from __future__ import annotations

import sys

import requests

from clover.config import Config
from stack.parts import Launch, Part, PartDirs
from stack.probes import ProbeFailed

GROUP = "controller"
DASHBOARD_PATH = "/dashboard/"


def dashboard_url(cfg: Config) -> str:
    """Where a browser opens the dashboard."""
    return cfg.controller_url + DASHBOARD_PATH


def controller_env(cfg: Config) -> dict[str, str]:
    """Every setting the controller reads, from the launcher's configuration (which may not be
    the environment's: ``--state-dir``, or a test's own stack)."""
    env = {
        "CLOVER_CONTROLLER_URL": cfg.controller_url,
        "CLOVER_REDIS_URL": cfg.redis_url,
        "CLOVER_COLLECTOR_GRPC": cfg.collector_grpc,
        "CLOVER_VALIDATION_GRPC": cfg.validation_grpc,
        "CLOVER_STATE_DIR": str(cfg.state_dir),
        "CLOVER_CASSANDRA_HOSTS": ",".join(cfg.cassandra_hosts),
        "CLOVER_CASSANDRA_PORT": str(cfg.cassandra_port),
        "CLOVER_JAEGER_URL": cfg.jaeger_url,
        "CLOVER_ZIPKIN_URL": cfg.zipkin_url,
        "CLOVER_TRACE_BACKEND": cfg.trace_backend,
        "CLOVER_PROMETHEUS_URL": cfg.prometheus_url,
        "CLOVER_SDC_MODE": cfg.sdc_mode,
        "CLOVER_SDC_TAG": cfg.sdc_tag,
        "CLOVER_SDC_STATS_PORT": str(cfg.sdc_stats_port),
        "PYTHONUNBUFFERED": "1",
    }
    if cfg.sdc_subnet:
        env["CLOVER_SDC_SUBNET"] = cfg.sdc_subnet
    if cfg.api_token:
        env["CLOVER_API_TOKEN"] = cfg.api_token
    return env


def _probe(cfg: Config) -> None:
    url = f"{cfg.controller_url}/test"
    try:
        answer = requests.get(url, timeout=3)
    except requests.RequestException as exc:
        raise ProbeFailed(f"GET {url} failed: {type(exc).__name__}") from None
    if answer.status_code != 200 or "clover-controller up" not in answer.text:
        raise ProbeFailed(f"GET {url} answered {answer.status_code}")


def controller_part(cfg: Config) -> Part:
    """``python -m controller.server``: the REST API and the dashboard on CLOVER_CONTROLLER_URL."""

    def prepare(dirs: PartDirs) -> Launch:
        return Launch([sys.executable, "-m", "controller.server"], env=controller_env(cfg))

    return Part(
        name="controller",
        ports={"http": cfg.controller_port},
        health="GET /test",
        probe=lambda: _probe(cfg),
        prepare=prepare,
        startup_timeout=30,
        stop_timeout=15,
    )


def local_parts(cfg: Config) -> list[Part]:
    """The parts `cloverctl local up controller` starts."""
    return [controller_part(cfg)]
