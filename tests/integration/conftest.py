"""Fixtures for tests against the real stack: clients and the visibility pipeline parts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from cassandra.cluster import Cluster

from clover import schema
from clover.config import Config
from stack.launcher import Launcher


@pytest.fixture(scope="session")
def cassandra(stack: Launcher, cfg: Config) -> Iterator[Any]:
    """A driver session on the visibility keyspace (schema applied)."""
    cluster = Cluster(list(cfg.cassandra_hosts), port=cfg.cassandra_port)
    session = cluster.connect()
    schema.apply_schema(session, cfg)
    session.set_keyspace(schema.KEYSPACE)
    yield session
    cluster.shutdown()


@pytest.fixture(scope="session")
def store(stack: Launcher, cfg: Config) -> redis.Redis:
    return redis.Redis.from_url(cfg.redis_url, decode_responses=True)


@pytest.fixture(scope="session")
def ingest(stack: Launcher, cassandra: Any) -> Iterator[Launcher]:
    """The streaming ingest job, running for the whole session."""
    stack.up(["ingest"])
    yield stack
    stack.down(["ingest"])
