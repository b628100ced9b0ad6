"""The progress report a long-running job rewrites every second (read by the local probes), and
where each job keeps it. No Spark here: the launcher reads these without loading pyspark."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from clover.config import Config


def write_report(path: Path, **fields: Any) -> None:
    """Atomically replace ``path`` with ``fields`` and the current time as ``updated``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"updated": time.time(), **fields}))
    os.replace(tmp, path)


def read_report(path: Path) -> dict[str, Any]:
    """The last report, or {} when there is none yet."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def ingest_status_file(cfg: Config) -> Path:
    """Where a running ingest reports its progress (read by `cloverctl local status`)."""
    return cfg.state_dir / "ingest" / "status.json"


def analytics_status_file(cfg: Config) -> Path:
    """Where the running analytics reports its progress (read by `cloverctl local status`)."""
    return cfg.state_dir / "analytics" / "status.json"
