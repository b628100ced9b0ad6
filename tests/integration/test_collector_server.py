"""The collector's gRPC control service: one worker, the original replies, init and truncate."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from clover import keys, schema
from clover.config import Config
from collector import client
from collector.server import start_server
from stack.launcher import Launcher


@pytest.fixture(scope="module")
def collector_address(stack: Launcher, cfg: Config) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    server, service = start_server(cfg, address)
    yield address
    service.stop_worker()
    server.stop(grace=1).wait()


def test_starting_twice_leaves_one_worker_and_stopping_twice_says_so(collector_address: str,
                                                                      store: redis.Redis) -> None:  # fmt: skip
    pid = os.getpid()
    assert client.start_collector(collector_address, sinterval=30) == f"Started collector on pid: {pid}"
    assert store.get(keys.ANALYTICS_ENABLED) == "1"
    store.delete(keys.ANALYTICS_ENABLED)  # as after a Redis that lost its data
    assert client.start_collector(collector_address) == f"Collector already running on pid: {pid}"
    assert store.get(keys.ANALYTICS_ENABLED) == "1"
    status = client.collector_status(collector_address)
    assert status.running and status.config.sinterval == 30
    assert client.stop_collector(collector_address) == f"Stopped collector on pid: {pid}"
    assert not client.collector_status(collector_address).running
    assert client.stop_collector(collector_address) == "Failed to stop collector: the collector is not running"


def test_a_bad_start_request_is_refused_and_starts_nothing(collector_address: str) -> None:
    with pytest.raises(
        client.CollectorUnavailable, match="invalid request: t_backend 'tempo' must be jaeger or zipkin"
    ):
        client.start_collector(collector_address, t_backend="tempo")
    assert not client.collector_status(collector_address).running


def test_init_creates_every_table(collector_address: str, cassandra: Any) -> None:
    assert client.init_visibility(collector_address) == "Added visibility schemas in cassandra"
    rows = cassandra.execute("SELECT table_name FROM system_schema.tables WHERE keyspace_name = 'visibility'")
    assert {r.table_name for r in rows} >= set(schema.tables())


def test_truncate_empties_the_listed_tables_and_refuses_unknown_ones(collector_address: str, cassandra: Any) -> None:
    cassandra.execute("INSERT INTO spans (traceid, spanid, duration) VALUES ('trunc', 's1', 5)")
    cassandra.execute("INSERT INTO metrics (m_name, monitor_time, series, m_value) VALUES ('trunc', 0, '', '1')")
    message = client.truncate_visibility(collector_address, ["spans", "no_such_table"])
    assert message == (
        "Failed to truncate visibility: unknown visibility table 'no_such_table'; tables are: "
        + ", ".join(schema.tables())
    )
    assert cassandra.execute("SELECT count(*) FROM spans WHERE traceid = 'trunc'").one().count == 1
    assert client.truncate_visibility(collector_address, ["spans"]) == "Truncated visibility tables"
    assert cassandra.execute("SELECT count(*) FROM spans WHERE traceid = 'trunc'").one().count == 0
    assert cassandra.execute("SELECT count(*) FROM metrics WHERE m_name = 'trunc'").one().count == 1
