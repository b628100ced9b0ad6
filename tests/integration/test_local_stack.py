"""The local stack: every part comes up healthy and does real work."""

from __future__ import annotations

import socket
import time
import uuid

import pytest
import redis
import requests
from cassandra.cluster import Cluster
from kafka import KafkaConsumer, KafkaProducer
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from clover.config import REDIS_PASSWORD_FILE, Config, secret_file, with_password
from stack.launcher import Launcher


def test_every_part_reports_healthy(stack: Launcher) -> None:
    rows = stack.status()
    assert [(r.name, r.health) for r in rows] == [
        ("redis", "healthy"),
        ("kafka", "healthy"),
        ("cassandra", "healthy"),
        ("prometheus", "healthy"),
        ("jaeger", "healthy"),
    ]
    assert all(r.pid and r.rss_bytes for r in rows)


def test_redis_round_trip(stack: Launcher, cfg: Config) -> None:
    client = redis.Redis.from_url(cfg.redis_url, decode_responses=True)
    client.set("clover-test:roundtrip", "value-1")
    assert client.get("clover-test:roundtrip") == "value-1"


def test_redis_turns_away_a_client_without_the_stacks_password(stack: Launcher, cfg: Config) -> None:
    kept = secret_file(cfg.state_dir, REDIS_PASSWORD_FILE)
    assert cfg.redis_password == kept.read_text().strip()
    private = (kept, stack.dirs("redis").root / "redis.conf")  # the rendered redis.conf holds it too
    assert [p.stat().st_mode & 0o777 for p in private] == [0o600, 0o600]
    with socket.create_connection(("127.0.0.1", cfg.redis_port), timeout=5) as raw:
        raw.sendall(b"PING\r\nGET clover-test:roundtrip\r\n")
        assert raw.recv(200).startswith(b"-NOAUTH Authentication required.")
    for url in (f"redis://127.0.0.1:{cfg.redis_port}/0", with_password(cfg.redis_url, "wrong")):
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(url, socket_timeout=5).ping()
    assert redis.Redis.from_url(cfg.redis_url, socket_timeout=5).ping() is True


def test_kafka_record_is_produced_and_consumed(stack: Launcher, cfg: Config) -> None:
    topic = f"clover-test-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=cfg.kafka_bootstrap)
    producer.send(topic, key=b"k1", value=b"hello clover").get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(
        topic, bootstrap_servers=cfg.kafka_bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=20000
    )
    records = []
    for record in consumer:
        records.append((record.key, record.value))
        break
    consumer.close()
    assert records == [(b"k1", b"hello clover")]


def test_visibility_keyspace_row_is_written_and_read_back(stack: Launcher, cfg: Config) -> None:
    cluster = Cluster(list(cfg.cassandra_hosts), port=cfg.cassandra_port)
    session = cluster.connect()
    session.execute(
        "CREATE KEYSPACE IF NOT EXISTS visibility"
        " WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    session.execute("CREATE TABLE IF NOT EXISTS visibility.stack_probe (id text PRIMARY KEY, value int)")
    session.execute("INSERT INTO visibility.stack_probe (id, value) VALUES (%s, %s)", ("row-1", 42))
    row = session.execute("SELECT value FROM visibility.stack_probe WHERE id = %s", ("row-1",)).one()
    cluster.shutdown()
    assert row.value == 42


def test_prometheus_answers_a_query(stack: Launcher, cfg: Config) -> None:
    deadline = time.monotonic() + 30
    result: list[dict[str, object]] = []
    while time.monotonic() < deadline and not result:
        body = requests.get(f"{cfg.prometheus_url}/api/v1/query", params={"query": 'up{job="prometheus"}'}).json()
        result = body["data"]["result"]
        time.sleep(1)
    assert [r["value"][1] for r in result] == ["1"]  # type: ignore[index]


def test_trace_backend_returns_a_span_sent_with_the_opentelemetry_sdk(stack: Launcher, cfg: Config) -> None:
    service = f"stack-test-{uuid.uuid4().hex[:6]}"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{cfg.otlp_http_url}/v1/traces")))
    with provider.get_tracer("test").start_as_current_span("GET /probe") as span:
        span.set_attribute("http.url", "/probe")
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    deadline = time.monotonic() + 30
    found: list[dict[str, object]] = []
    while time.monotonic() < deadline and not found:
        response = requests.get(f"{cfg.jaeger_url}/api/traces/{trace_id}")
        if response.status_code == 200:
            found = response.json()["data"]
        time.sleep(0.5)
    spans = found[0]["spans"]  # type: ignore[index]
    assert [(s["operationName"], s["traceID"]) for s in spans] == [("GET /probe", trace_id)]
    services = requests.get(f"{cfg.jaeger_url}/api/services").json()["data"]
    assert service in services


def test_data_survives_down_then_up(stack: Launcher, cfg: Config) -> None:
    topic = f"survive-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=cfg.kafka_bootstrap)
    producer.send(topic, value=b"kept record").get(timeout=30)
    producer.close()
    cluster = Cluster(list(cfg.cassandra_hosts), port=cfg.cassandra_port)
    session = cluster.connect()
    session.execute(
        "CREATE KEYSPACE IF NOT EXISTS survival WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    session.execute("CREATE TABLE IF NOT EXISTS survival.rows (id text PRIMARY KEY, v text)")
    session.execute("INSERT INTO survival.rows (id, v) VALUES ('r1', 'kept row')")
    cluster.shutdown()
    redis.Redis.from_url(cfg.redis_url).set("survival", "kept value")

    stack.down()
    assert [r.health for r in stack.status()] == ["stopped"] * 5
    stack.up()

    assert redis.Redis.from_url(cfg.redis_url).get("survival") == b"kept value"
    cluster = Cluster(list(cfg.cassandra_hosts), port=cfg.cassandra_port)
    assert cluster.connect().execute("SELECT v FROM survival.rows WHERE id = 'r1'").one().v == "kept row"
    cluster.shutdown()
    consumer = KafkaConsumer(
        topic, bootstrap_servers=cfg.kafka_bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=20000
    )
    values = []
    for record in consumer:
        values.append(record.value)
        break
    consumer.close()
    assert values == [b"kept record"]
