"""The Spark jobs as parts of the local stack (group ``visibility``): each runs through
``spark-submit.sh`` as one long-lived application."""

from __future__ import annotations

import time
from pathlib import Path

from clover.config import CHECKOUT_DIR, Config
from jobs.ingest import status_file
from jobs.status import read_report
from jobs.visibility import status_file as analytics_status_file
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


def analytics_part(cfg: Config) -> Part:
    """The visibility analytics runner: one long-lived Spark application, a run every 5 s."""

    def prepare(dirs: PartDirs) -> Launch:
        analytics_status_file(cfg).unlink(missing_ok=True)
        return Launch([str(SPARK_SUBMIT), str(CHECKOUT_DIR / "jobs" / "visibility.py")])

    return Part(
        name="analytics",
        ports={},
        health="runner reports progress",
        probe=lambda: fresh_status(analytics_status_file(cfg)),
        prepare=prepare,
        uses_java=True,
        startup_timeout=120,
        stop_timeout=60,
        installed=(SPARK_SUBMIT,),
    )


def ingest_part(cfg: Config) -> Part:
    def prepare(dirs: PartDirs) -> Launch:
        status_file(cfg).unlink(missing_ok=True)
        return Launch([str(SPARK_SUBMIT), str(CHECKOUT_DIR / "jobs" / "ingest.py")])

    return Part(
        name="ingest",
        ports={},
        health="streaming query reports progress",
        probe=lambda: fresh_status(status_file(cfg)),
        prepare=prepare,
        uses_java=True,
        startup_timeout=120,
        stop_timeout=60,
        installed=(SPARK_SUBMIT,),
    )
