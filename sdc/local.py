"""The sample chain's pods as parts of the local stack (``cloverctl local up sdc``)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import requests

from clover.config import Config
from sdc import topology
from sdc.waf.settings import waf_env
from stack.parts import Launch, Part, PartDirs
from stack.probes import ProbeFailed

GROUP = "sdc"


def _probe(cfg: Config, name: str) -> None:
    url = f"http://127.0.0.1:{topology.stats_port(cfg, name)}/ready"
    try:
        answer = requests.get(url, timeout=2)
    except requests.RequestException as exc:
        raise ProbeFailed(f"GET {url} failed: {type(exc).__name__}") from None
    if answer.status_code != 200:
        raise ProbeFailed(f"{name} is still starting ({url} answered {answer.status_code})")


def pod_env(cfg: Config) -> dict[str, str]:
    """The settings a pod reads, from the launcher's configuration (which may not be the
    environment's: ``--state-dir``, or a test's own chain)."""
    token = {"CLOVER_API_TOKEN": cfg.api_token} if cfg.api_token else {}
    return {
        **token,
        "CLOVER_STATE_DIR": str(cfg.state_dir),
        "CLOVER_REDIS_URL": cfg.redis_url,
        "CLOVER_OTLP_HTTP_URL": cfg.otlp_http_url,
        "CLOVER_CONTROLLER_URL": cfg.controller_url,
        "CLOVER_SDC_MODE": cfg.sdc_mode,
        "CLOVER_SDC_SUBNET": str(topology.subnet(cfg)),
        "CLOVER_SDC_TAG": cfg.sdc_tag,
        "CLOVER_SDC_STATS_PORT": str(cfg.sdc_stats_port),
        "CLOVER_SDC_BLOCK_SECONDS": str(cfg.sdc_block_seconds),
        "CLOVER_SDC_TRACE_RATIO": str(cfg.sdc_trace_ratio),
        "CLOVER_SDC_DATAPLANE": cfg.sdc_dataplane,
        **waf_env(cfg),
        "PYTHONUNBUFFERED": "1",
    }


def part(cfg: Config, name: str) -> Part:
    """One pod as a part: ``python -m sdc.pod <name>`` with the launcher's state directory."""

    def prepare(dirs: PartDirs) -> Launch:
        return Launch([sys.executable, "-m", "sdc.pod", name], env=pod_env(cfg))

    installed: tuple[Path, ...] = ()
    if topology.mode(cfg) == "netns":
        installed = (Path(shutil.which("ip") or "/usr/sbin/ip"),)
    return Part(
        name=name,
        ports={"stats": topology.stats_port(cfg, name)},
        health=f"pod ready ({'Apache' if topology.spec(name).kind == topology.WAF else 'HTTP + gRPC'} listening)",
        probe=lambda: _probe(cfg, name),
        prepare=prepare,
        startup_timeout=40,
        stop_timeout=15,
        installed=installed,
    )


def parts(cfg: Config) -> dict[str, Part]:
    """Every pod of the chain, in start order (servers, load balancers, IDS, proxy)."""
    return {name: part(cfg, name) for name in topology.POD_NAMES}


LOAD_GROUP = "load"


def load_part(cfg: Config) -> Part:
    """The demo's steady load on the proxy (``python -m sdc.load``); CLOVER_LOAD_RATE req/s."""
    rate = os.environ.get("CLOVER_LOAD_RATE", "20")

    def prepare(dirs: PartDirs) -> Launch:
        return Launch([sys.executable, "-m", "sdc.load", "--rate", rate], env=pod_env(cfg))

    def probe() -> None:
        url = f"http://{topology.pod_ip(cfg, 'proxy-access-control')}:{topology.HTTP_PORT}/"
        try:
            requests.get(url, timeout=3)
        except requests.RequestException as exc:
            raise ProbeFailed(f"the proxy it loads does not answer: {type(exc).__name__}") from None

    return Part(
        name="load",
        ports={},
        health=f"sending {rate} req/s to the proxy",
        probe=probe,
        prepare=prepare,
        startup_timeout=20,
        stop_timeout=15,
    )
