"""`make demo`: the whole thing on this machine, until Ctrl-C.

The backing services, the sample chain, Clovisor (as root), the visibility pipeline (collector,
ingest, analytics) and the controller with the dashboard; visibility is initialised, told to
track the original guide's services and metrics (cloverctl/yaml/set_visibility.yaml) and
started through the controller's REST API, and a steady load runs through the chain. Ctrl-C
(or SIGTERM) stops every part cleanly.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import yaml

from clover.config import API_TOKEN_FILE, CHECKOUT_DIR, Config, secret_file
from sdc import load
from stack.catalogue import local_stack
from stack.launcher import Launcher, StackError

SET_VISIBILITY = CHECKOUT_DIR / "cloverctl" / "yaml" / "set_visibility.yaml"
DASHBOARD_PATH = "/dashboard/"

Progress = Callable[[str], None]


def demo_groups() -> list[str]:
    """What the demo runs, in start order; Clovisor only as root (it loads BPF programs)."""
    groups = ["infra", "sdc", "logging", "visibility", "controller"]
    if os.geteuid() == 0:
        groups.append("clovisor")
    return [*groups, "load"]


def controller_call(cfg: Config, method: str, path: str, body: Any = None) -> str:
    """One call to the controller's REST API; raises StackError with its answer when refused."""
    headers = {"Authorization": f"Bearer {cfg.api_token}"} if cfg.api_token else {}
    response = requests.request(method, cfg.controller_url + path, json=body, headers=headers, timeout=120)
    if response.status_code >= 400:
        raise StackError(f"{method} {path} answered {response.status_code}: {response.text[:300]}")
    return response.text.strip()


def token_hint(cfg: Config) -> str:
    """How to get the token the controller's mutating routes and the dashboard's controls need."""
    if not cfg.api_token:
        return "none: the controller's routes are open (CLOVER_API_TOKEN unset)"
    if os.environ.get("CLOVER_API_TOKEN"):
        return "CLOVER_API_TOKEN (cloverctl sends it)"
    return (
        f".venv/bin/cloverctl local token  (kept in {secret_file(cfg.state_dir, API_TOKEN_FILE)}; "
        "cloverctl sends it, the dashboard asks for it)"
    )


def start_visibility(cfg: Config, progress: Progress, sample: Path = SET_VISIBILITY) -> None:
    """init, set (the original guide's set_visibility.yaml) and start visibility."""
    progress(controller_call(cfg, "GET", "/collector/init"))
    progress(controller_call(cfg, "POST", "/visibility/set", yaml.safe_load(sample.read_text())))
    progress(controller_call(cfg, "POST", "/collector/start", {}))


def run_demo(cfg: Config, progress: Progress, stop: threading.Event) -> Launcher:
    """Start everything, print where to look, and wait for ``stop``; then stop everything."""
    stack = local_stack(cfg)
    try:
        for group in demo_groups():  # in order: each group's services are ready before the next starts
            stack.up([group], progress=progress)
        start_visibility(cfg, progress)
        progress("")
        rate = float(os.environ.get("CLOVER_LOAD_RATE", "20"))
        progress(f"Load:        {load.describe(rate)}")
        progress(
            f"             each request counted once: proxy-access-control shows request_rate {rate:g}, "
            f"clover-server1..3 {rate / 3:.2f} each (the services set_visibility.yaml tracks)"
        )
        progress(f"Dashboard:   {cfg.controller_url}{DASHBOARD_PATH}")
        progress(f"API token:   {token_hint(cfg)}")
        progress(f"REST API:    {cfg.controller_url}/api/docs  (OpenAPI: {cfg.controller_url}/openapi.json)")
        progress(f"Jaeger API:  {cfg.jaeger_url}/api/services    Prometheus: {cfg.prometheus_url}")
        progress("Try:         .venv/bin/cloverctl get visibility -s all")
        progress("             .venv/bin/cloverctl check visibility --max-p99 proxy-access-control=500ms")
        progress("Ctrl-C stops everything.")
        stop.wait()
    finally:
        progress("stopping every part")
        stack.down(progress=progress)
    return stack


def main_loop(cfg: Config, progress: Progress) -> None:
    """run_demo until SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    run_demo(cfg, progress, stop)
