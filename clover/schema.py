"""The visibility keyspace: applying ``schema.cql`` and truncating its tables.

Where a row goes inside a table (its time bucket and shard) is jobs/buckets.py's."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from importlib import resources
from typing import Any

from clover.config import Config


def schema_text() -> str:
    """The CQL source; read as a package resource, so it works from the zip shipped to Spark too."""
    return resources.files("clover").joinpath("schema.cql").read_text()


KEYSPACE = "visibility"
# The original's tables, in the order its TruncateVisibility used by default.
ORIGINAL_TABLES = ("traces", "metrics", "spans")


class UnknownTable(ValueError):
    """A table name that is not part of the visibility schema."""


def statements(cfg: Config) -> list[str]:
    """The CQL statements of the schema, with replication and retention filled in."""
    text = string.Template(schema_text()).substitute(
        replication=cfg.cassandra_replication, ttl_seconds=cfg.retention_seconds
    )
    without_comments = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in without_comments.split(";") if s.strip()]


def tables() -> tuple[str, ...]:
    """Every table the schema defines, in file order."""
    return tuple(re.findall(r"CREATE TABLE IF NOT EXISTS visibility\.(\w+)", schema_text()))


def apply_schema(session: Any, cfg: Config) -> None:
    """Create the keyspace and every table (idempotent)."""
    for statement in statements(cfg):
        session.execute(statement, timeout=60)


def ensure_schema(cfg: Config) -> None:
    """Connect and apply the schema: a job may start before `cloverctl init visibility`."""
    from cassandra.cluster import Cluster

    cluster = Cluster(list(cfg.cassandra_hosts), port=cfg.cassandra_port)
    try:
        apply_schema(cluster.connect(), cfg)
    finally:
        cluster.shutdown()


def truncate(session: Any, names: Iterable[str]) -> list[str]:
    """TRUNCATE the named tables; an unknown name is refused before anything is truncated."""
    known = tables()
    chosen = list(names)
    for name in chosen:
        if name not in known:
            raise UnknownTable(f"unknown visibility table {name!r}; tables are: {', '.join(known)}")
    rows = session.execute("SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (KEYSPACE,))
    existing = {row.table_name for row in rows}
    for name in chosen:
        if name in existing:  # a table never created holds nothing to truncate
            session.execute(f"TRUNCATE {KEYSPACE}.{name}", timeout=120)
    return chosen
