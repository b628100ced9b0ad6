"""The Spark jobs as parts of the local stack (group ``visibility``): each runs through
``spark-submit.sh`` as one long-lived application."""

from __future__ import annotations

import time
from pathlib import Path

from clover.config import CHECKOUT_DIR, Config
from jobs.status import analytics_status_file, ingest_status_file, read_report
from stack.parts import Launch, Part, PartDirs
from stack.probes import ProbeFailed

SPARK_SUBMIT = CHECKOUT_DIR / "spark-submit.sh"
FRESH_SECONDS = 30.0


def fresh_status(path: Path) -> None:
    """The job's status file was rewritten in the last FRESH_SECONDS."""
    report = read_report(path)
    if not report:
        raise ProbeFailed(f"no status report yet in {path}")
    age = time.time() - float(report.get("updated", 0))
    if age > FRESH_SECONDS:
        raise ProbeFailed(f"status report is {age:.0f}s old")


def spark_job_part(name: str, script: str, status: Path, health: str) -> Part:
    """A job under jobs/ run through spark-submit.sh, healthy while its status file is fresh."""

    def prepare(dirs: PartDirs) -> Launch:
        status.unlink(missing_ok=True)
        return Launch([str(SPARK_SUBMIT), str(CHECKOUT_DIR / "jobs" / script)])

    return Part(
        name=name,
        ports={},
        health=health,
        probe=lambda: fresh_status(status),
        prepare=prepare,
        uses_java=True,
        startup_timeout=120,
        stop_timeout=60,
        installed=(SPARK_SUBMIT,),
    )


def analytics_part(cfg: Config) -> Part:
    """The visibility analytics runner: one long-lived Spark application."""
    return spark_job_part("analytics", "visibility.py", analytics_status_file(cfg), "runner reports progress")


def ingest_part(cfg: Config) -> Part:
    """The streaming ingest: one long-lived Spark application."""
    return spark_job_part("ingest", "ingest.py", ingest_status_file(cfg), "streaming query reports progress")
