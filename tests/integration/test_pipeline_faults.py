"""Faults in the middle of the pipeline, against the real services; each test asserts exact counts:
nothing lost, nothing counted twice.

* Kafka SIGKILLed while the ingest streams, and Cassandra SIGKILLed while it writes (both
  restarted): every span Kafka acknowledged is stored once, and the published figures equal what
  was produced.
* Redis stopped, and SIGKILLed, while the collector collects from Jaeger: the same.
* Jaeger SIGKILLed as soon as it answered for spans: it holds every one of them once restarted.
* Redis stopped and SIGKILLed again and again while the analytics publishes: a reader never sees
  a key missing or two publications mixed, and the figures end up those of a full recompute.

Each test starts from empty tables and an empty Redis; the fault moments are seeded
(CLOVER_TEST_SEED).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import redis
import requests
from kafka import KafkaProducer
from opentelemetry.trace import SpanKind, set_span_in_context

from clover import keys, schema, topics
from clover.config import Config
from clover.lease import visibility_cleared
from jobs.publish import clear_published
from protos import records_pb2
from stack.launcher import Launcher
from tests.e2e.collecting import collect_from_now
from tests.integration.analytics_support import (
    kill_tree,
    published,
    recompute_from_scratch,
    reports_after,
    spans_over,
)
from tests.integration.test_collector_pipeline import otel_provider
from tests.integration.visibility_seed import seed
from tests.waiting import wait_until

pytestmark = pytest.mark.spark

SEED = int(os.environ.get("CLOVER_TEST_SEED", "18"))
CHUNK = 300  # traces produced at once
Ident = tuple[str, str]
T = TypeVar("T")


@pytest.fixture(scope="module")
def running(ingest: Launcher) -> Iterator[Launcher]:
    """The ingest and the analytics, running for the module's tests (an earlier module may have
    taken the whole stack down and up without the ingest)."""
    ingest.up(["ingest", "analytics"])
    yield ingest
    ingest.down(["analytics", "collector"])


@pytest.fixture
def pipeline(running: Launcher) -> Iterator[Launcher]:
    """The stack with the ingest and the analytics running; afterwards every part is running again."""
    running.up(["ingest", "analytics"])
    yield running
    running.up(["redis", "kafka", "cassandra", "jaeger", "ingest"])


def status_of(i: int) -> int:
    return 503 if i % 10 == 0 else 404 if i % 10 == 1 else 200


def produce(cfg: Config, spans: list[records_pb2.Span]) -> None:
    """Send ``spans`` to clover.spans and wait until Kafka acknowledged every one (acks=all)."""
    producer = KafkaProducer(bootstrap_servers=cfg.kafka_bootstrap, acks="all", linger_ms=5)
    try:
        sent = [producer.send(topics.SPANS, key=s.trace_id.encode(), value=s.SerializeToString()) for s in spans]
        producer.flush(timeout=60)
        for future in sent:
            future.get(timeout=0)  # raises unless Kafka acknowledged it
    finally:
        producer.close(timeout=10)


def start_clean(stack: Launcher, cfg: Config, cassandra: Any, store: redis.Redis, services: Iterable[str]) -> None:
    """Empty tables, no published figure and ``services`` tracked, as a clear leaves them, once the
    ingest stored everything Kafka held (a marker produced now is stored after every record before it)."""
    marker = records_pb2.Span(trace_id=f"marker-{uuid.uuid4().hex}", span_id="0", service="marker",
                              start_time_us=int(time.time() * 1_000_000))  # fmt: skip
    produce(cfg, [marker])
    query = "SELECT spanid FROM spans WHERE traceid = %s"
    wait_until(lambda: cassandra.execute(query, (marker.trace_id,)).one(), 120, 0.5, "the ingest to catch up")
    stack.down(["collector"])
    with visibility_cleared(store, keys.VISIBILITY_LEASE, keys.VISIBILITY_CLEAR_REQUESTED):
        schema.truncate(cassandra, schema.tables())
    clear_published(store)
    with store.pipeline(transaction=True) as tx:
        tx.delete(keys.VISIBILITY_SERVICES, keys.COLLECTOR_WATERMARKS, keys.COLLECTOR_SENT_SPANS)
        tx.sadd(keys.VISIBILITY_SERVICES, *[keys.underscore(s) for s in services])
        tx.set(keys.ANALYTICS_ENABLED, "1")
        tx.execute()


def writing(cassandra: Any, before: int) -> None:
    """Wait until the ingest wrote the first rows of its next micro-batch: more than ``before`` rows
    in spans_by_bucket (the table it writes first)."""
    query = "SELECT count(*) AS n FROM spans_by_bucket"
    wait_until(lambda: cassandra.execute(query).one().n > before, 120, 0.05, "the ingest to write")


def kafka_traces(service: str, first: int, count: int, start_us: int) -> list[records_pb2.Span]:
    """Traces ``first``.. of a server span (a request) and a client span under it (a call out, not one)."""
    spans = []
    for i in range(first, first + count):
        trace, start = f"{service}-{i}", start_us + i * 100_000
        spans.append(records_pb2.Span(
            trace_id=trace, span_id="s", service=service, operation_name=f"GET /f{i % 3}", start_time_us=start,
            duration_us=1000 + i, http_method="GET", http_url=f"/f{i % 3}", http_status_code=status_of(i),
            user_agent=service, node_id=service, source=records_pb2.JAEGER, kind=records_pb2.SPAN_KIND_SERVER,
            upstream_cluster="none",
        ))  # fmt: skip
        spans.append(records_pb2.Span(
            trace_id=trace, span_id="c", parent_span_id="s", service=service, operation_name="GET /down",
            start_time_us=start + 100, duration_us=500, http_method="GET", http_url="/down", http_status_code=200,
            user_agent=service, node_id=service, source=records_pb2.JAEGER, kind=records_pb2.SPAN_KIND_CLIENT,
            upstream_cluster="none",
        ))  # fmt: skip
    return spans


@dataclass
class Made:
    """The spans a test made, as (trace id, span id) pairs, and the statuses of the requests among them."""

    idents: list[Ident] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    def add(self, spans: list[records_pb2.Span]) -> list[records_pb2.Span]:
        self.idents += [(s.trace_id, s.span_id) for s in spans]
        self.statuses += [s.http_status_code for s in spans if s.kind == records_pb2.SPAN_KIND_SERVER]
        return spans

    def figures(self) -> dict[str, str | None]:
        """What the analytics must publish for them (the tracked service's requests)."""
        return {
            "span_count": str(len(self.idents)),
            "trace_count": str(len({trace for trace, _ in self.idents})),
            "request_count": str(len(self.statuses)),
            "errors": str(sum(s >= 400 for s in self.statuses)),
            "errors_4xx": str(sum(400 <= s < 500 for s in self.statuses)),
            "errors_5xx": str(sum(s >= 500 for s in self.statuses)),
        }


def figures_of(store: redis.Redis, service: str) -> dict[str, str | None]:
    with store.pipeline(transaction=True) as tx:
        tx.get(keys.SPAN_COUNT)
        tx.get(keys.TRACE_COUNT)
        tx.hmget(keys.service_stats(service), ["request_count", "errors", "errors_4xx", "errors_5xx"])
        span_count, trace_count, stats = tx.execute()
    return {"span_count": span_count, "trace_count": trace_count,
            **dict(zip(("request_count", "errors", "errors_4xx", "errors_5xx"), stats, strict=True))}  # fmt: skip


def stored(cassandra: Any) -> tuple[Counter[Ident], Counter[Ident]]:
    """Every (trace id, span id) in visibility.spans and in spans_by_bucket."""
    return tuple(  # type: ignore[return-value]
        Counter((r.traceid, r.spanid) for r in cassandra.execute(f"SELECT traceid, spanid FROM {table}"))
        for table in ("spans", "spans_by_bucket")
    )


def settled(probe: Callable[[], T], expected: T, timeout: float, what: str) -> None:
    """Wait until ``probe()`` returns ``expected``; fail showing the difference after ``timeout``."""

    def matches() -> bool:
        try:
            return probe() == expected
        except Exception:  # a restarted service the probe reads from is not reachable yet
            return False

    with contextlib.suppress(AssertionError):
        wait_until(matches, timeout, 1.0, what)
    assert probe() == expected, what


def assert_counted_once(cfg: Config, cassandra: Any, store: redis.Redis, service: str, made: Made) -> None:
    """Each span once in both tables, and the figures exactly those of the spans; still so after
    three more runs of the analytics."""
    once = Counter(made.idents)
    assert set(once.values()) == {1}
    figures = made.figures()
    settled(lambda: stored(cassandra), (once, once), 180, f"{len(once)} spans stored once")
    settled(lambda: figures_of(store, service), figures, 120, f"figures {figures}")
    reports_after(cfg, 3)
    assert stored(cassandra) == (once, once)
    assert figures_of(store, service) == figures


@contextlib.contextmanager
def away(stack: Launcher, part: str, killed: bool) -> Iterator[None]:
    """``part`` stopped (SIGTERM), or SIGKILLed, for the block; started again after it."""
    if killed:
        process = stack.process(part)
        assert process is not None, f"{part} is not running"
        kill_tree(process)
    else:
        stack.down([part])
    try:
        yield
    finally:
        stack.up([part])


def test_kafka_killed_while_the_ingest_streams_loses_and_repeats_nothing(
    pipeline: Launcher, cfg: Config, cassandra: Any, store: redis.Redis
) -> None:
    service = f"kafkakill-{uuid.uuid4().hex[:6]}"
    start_clean(pipeline, cfg, cassandra, store, [service])
    start_us, made = int(time.time() * 1_000_000) - 150_000_000, Made()
    produce(cfg, made.add(kafka_traces(service, 0, CHUNK, start_us)))
    writing(cassandra, 0)
    produce(cfg, made.add(kafka_traces(service, CHUNK, CHUNK, start_us)))  # acknowledged, not yet read
    with away(pipeline, "kafka", killed=True):
        pass
    produce(cfg, made.add(kafka_traces(service, 2 * CHUNK, CHUNK, start_us)))  # after the restart
    assert_counted_once(cfg, cassandra, store, service, made)


def test_cassandra_killed_while_the_ingest_writes_loses_and_repeats_nothing(
    pipeline: Launcher, cfg: Config, cassandra: Any, store: redis.Redis
) -> None:
    service = f"cqlkill-{uuid.uuid4().hex[:6]}"
    start_clean(pipeline, cfg, cassandra, store, [service])
    start_us, made = int(time.time() * 1_000_000) - 150_000_000, Made()
    produce(cfg, made.add(kafka_traces(service, 0, CHUNK, start_us)))
    writing(cassandra, 0)
    produce(cfg, made.add(kafka_traces(service, CHUNK, CHUNK, start_us)))  # not yet read
    with away(pipeline, "cassandra", killed=True):
        produce(cfg, made.add(kafka_traces(service, 2 * CHUNK, CHUNK, start_us)))  # while Cassandra is down
    produce(cfg, made.add(kafka_traces(service, 3 * CHUNK, CHUNK, start_us)))  # after the restart
    assert_counted_once(cfg, cassandra, store, service, made)


def send_requests(cfg: Config, service: str, count: int, made: Made) -> None:
    """``count`` traces to Jaeger, starting now, each a server span (a request) and a client span
    under it (a call out, not a request)."""
    provider = otel_provider(cfg, service)
    tracer = provider.get_tracer("clover-fault-test")
    start = time.time_ns()
    for i in range(count):
        at = start + i * 1_000_000
        attributes = {"http.url": f"/f{i % 3}", "http.status_code": status_of(i)}
        root = tracer.start_span(f"GET /f{i % 3}", kind=SpanKind.SERVER, start_time=at, attributes=attributes)
        attributes = {"http.url": "/down", "http.status_code": 200}
        child = tracer.start_span("GET /down", context=set_span_in_context(root), kind=SpanKind.CLIENT,
                                  start_time=at + 100_000, attributes=attributes)  # fmt: skip
        child.end(end_time=at + 600_000)
        root.end(end_time=at + 900_000)
        trace_id = format(root.get_span_context().trace_id, "032x")
        made.idents += [(trace_id, format(span.get_span_context().span_id, "016x")) for span in (root, child)]
        made.statuses.append(status_of(i))
    provider.shutdown()


def test_redis_restarted_or_the_trace_backend_away_while_the_collector_collects_loses_and_repeats_nothing(
    pipeline: Launcher, cfg: Config, cassandra: Any, store: redis.Redis
) -> None:
    rng = random.Random(SEED)
    service = f"rediscoll-{uuid.uuid4().hex[:6]}"
    start_clean(pipeline, cfg, cassandra, store, [service])
    pipeline.up(["collector"])
    collect_from_now(cfg, store, [service])
    made = Made()
    send_requests(cfg, service, 10, made)
    for killed in (False, True):
        time.sleep(rng.uniform(0.5, 4.0))  # the collector is somewhere in its 2-s cycle
        with away(pipeline, "redis", killed):
            send_requests(cfg, service, 10, made)  # while Redis is away
            time.sleep(2.0)  # a cycle fails meanwhile
        send_requests(cfg, service, 10, made)
    with away(pipeline, "jaeger", killed=False):  # what the backend held when it went away
        time.sleep(3.0)  # a cycle fails meanwhile
    send_requests(cfg, service, 10, made)
    assert_counted_once(cfg, cassandra, store, service, made)


def test_the_trace_backend_killed_once_it_answered_keeps_every_span_it_answered_for(
    pipeline: Launcher, cfg: Config
) -> None:
    service = f"jaegerkill-{uuid.uuid4().hex[:6]}"
    made = Made()
    send_requests(cfg, service, 40, made)  # each span sent alone, every one answered
    with away(pipeline, "jaeger", killed=True):
        pass
    answer = requests.get(f"{cfg.jaeger_url}/api/traces", params={"service": service, "limit": 1000}, timeout=30)
    answer.raise_for_status()
    kept = Counter((s["traceID"], s["spanID"]) for trace in answer.json()["data"] for s in trace["spans"])
    assert kept == Counter(made.idents)


SERVICES = ("svc-a", "svc-b")


def snapshot(client: redis.Redis) -> list[Any]:
    """What a reader of the figures reads, in one transaction."""
    with client.pipeline(transaction=True) as tx:
        tx.get(keys.SPAN_COUNT)
        tx.hget(keys.service_stats("svc-a"), "request_count")
        tx.hget(keys.service_stats("svc-b"), "request_count")
        tx.hvals(keys.url_stats("svc-a"))
        tx.zrange(keys.SPAN_URLS_Z, 0, -1, withscores=True)
        return tx.execute()  # type: ignore[no-any-return]


def whole(values: list[Any]) -> bool:
    """Whether a snapshot is one publication: every key there, and the figures of the same spans
    (spans_over makes two requests of svc-a and one of svc-b per bucket, each with a URL)."""
    count, a, b, urls, scores = values
    if None in (count, a, b) or not urls or not scores:
        return False
    spans, a_requests, b_requests = int(count), int(a), int(b)
    return (
        spans == a_requests + b_requests
        and a_requests == 2 * b_requests
        and sum(int(json.loads(u)["request_count"]) for u in urls) == a_requests
        and sum(score for _, score in scores) == spans
    )


class Reader:
    """Reads the figures in the background until the block ends: the snapshots that were not one
    publication, and how many reads succeeded and failed (Redis away)."""

    def __init__(self, cfg: Config):
        self.client = redis.Redis.from_url(cfg.redis_url, decode_responses=True, socket_timeout=2)
        self.broken: list[list[Any]] = []
        self.reads = self.failed = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read)

    def _read(self) -> None:
        while not self._done.wait(0.005):
            try:
                values = snapshot(self.client)
            except redis.RedisError:
                self.failed += 1
                continue
            self.reads += 1
            if not whole(values):
                self.broken.append(values)

    def __enter__(self) -> Reader:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()


def test_redis_restarted_while_the_analytics_publishes_leaves_whole_publications_and_exact_figures(
    pipeline: Launcher, cfg: Config, cassandra: Any, store: redis.Redis
) -> None:
    rng = random.Random(SEED)
    bucket_us = cfg.bucket_seconds * 1_000_000
    start_clean(pipeline, cfg, cassandra, store, SERVICES)
    spans = spans_over(60, int(time.time() * 1_000_000), bucket_us, "p0-")
    seed(cassandra, spans, cfg.bucket_seconds)
    wait_until(lambda: store.get(keys.SPAN_COUNT) == str(len(spans)), 180, 0.5, "the first publication")
    with Reader(cfg) as reader:
        for round_ in range(1, 5):
            more = spans_over(60, int(time.time() * 1_000_000), bucket_us, f"p{round_}-")
            seed(cassandra, more, cfg.bucket_seconds)  # the next run recomputes 60 buckets, in two steps
            spans += more
            time.sleep(rng.uniform(0.5, 6.0))  # in a run's reads, its writes or its publication
            with away(pipeline, "redis", killed=round_ % 2 == 0):
                pass
        settled(lambda: store.get(keys.SPAN_COUNT), str(len(spans)), 180, f"all {len(spans)} spans counted")
        reports_after(cfg, 3)
    pipeline.down(["analytics"])
    assert reader.broken == []
    assert reader.reads > 100
    after_restarts = published(store)
    assert after_restarts[keys.service_stats("svc-a")]["request_count"] == str(2 * len(spans) // 3)
    recompute_from_scratch(cfg, cassandra)
    assert published(store) == after_restarts
