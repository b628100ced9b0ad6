"""Clovisor as a part of the local stack (``cloverctl local up clovisor``; needs root)."""

from __future__ import annotations

import sys
from pathlib import Path

from clover.config import Config
from stack import probes
from stack.parts import Launch, Part, PartDirs


def clovisor_parts(cfg: Config) -> list[Part]:
    """The tracer, discovering the local pod registry's pods; metrics on ``clovisor_metrics_port``."""
    executable = Path(sys.executable).with_name("clovisor")

    def prepare(dirs: PartDirs) -> Launch:
        dirs.root.mkdir(parents=True, exist_ok=True)
        return Launch([str(executable), "run", "--discovery", "local"])

    return [
        Part(
            name="clovisor",
            ports={"metrics": cfg.clovisor_metrics_port},
            health="/metrics",
            probe=lambda: probes.http_ok(f"http://{cfg.clovisor_metrics_host}:{cfg.clovisor_metrics_port}/metrics"),
            prepare=prepare,
            startup_timeout=60,
            stop_timeout=30,
            installed=(executable,),
        )
    ]
