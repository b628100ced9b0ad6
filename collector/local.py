"""The collector as a part of the local stack (group ``visibility``)."""

from __future__ import annotations

import sys

from clover.config import Config
from collector.client import CollectorUnavailable, collector_status
from stack.parts import Launch, Part, PartDirs
from stack.probes import ProbeFailed


def collector_part(cfg: Config) -> Part:
    def prepare(dirs: PartDirs) -> Launch:
        return Launch([sys.executable, "-m", "collector.server", "--listen", cfg.collector_grpc])

    def probe() -> None:
        try:
            collector_status(cfg.collector_grpc, timeout=3)
        except CollectorUnavailable as exc:
            raise ProbeFailed(str(exc)) from None

    return Part(
        name="collector",
        ports={"grpc": int(cfg.collector_grpc.rpartition(":")[2])},
        health="gRPC Status",
        probe=probe,
        prepare=prepare,
        startup_timeout=30,
        stop_timeout=30,
    )
