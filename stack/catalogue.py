"""Every part `cloverctl local` can run: the backing services and Clover's own services."""

from __future__ import annotations

from clover.config import Config
from clovisor.local import clovisor_parts
from collector.local import collector_part
from controller import local as controller
from jobs.local import analytics_part, ingest_part
from logstore import local as logging_parts
from sdc import local as sdc
from stack.cluster import parts as cluster
from stack.launcher import Launcher
from stack.parts import infrastructure, zipkin_part
from validation import local as validation

INFRASTRUCTURE = "infra"
VISIBILITY = "visibility"


def local_stack(cfg: Config) -> Launcher:
    """A launcher for all parts; with no part named it acts on the backing services."""
    parts = infrastructure(cfg)
    groups = {INFRASTRUCTURE: list(parts)}
    parts["zipkin"] = zipkin_part(cfg)
    visibility = [collector_part(cfg), ingest_part(cfg), analytics_part(cfg)]
    for group, extra in (
        (VISIBILITY, visibility),
        (validation.GROUP, validation.local_parts(cfg)),
        (sdc.GROUP, list(sdc.parts(cfg).values())),
        (sdc.LOAD_GROUP, [sdc.load_part(cfg)]),
        ("clovisor", clovisor_parts(cfg)),
        (controller.GROUP, controller.local_parts(cfg)),
        (logging_parts.GROUP, logging_parts.local_parts(cfg)),
        (cluster.GROUP, cluster.cluster_parts(cfg)),
    ):
        parts.update({p.name: p for p in extra})
        groups[group] = [p.name for p in extra]
    return Launcher(cfg, parts, groups=groups, default=groups[INFRASTRUCTURE])
