"""The collector across restarts, kills and Kafka outages: every span the backend holds reaches
Kafka (and Cassandra) once, nothing lost, nothing twice.

Each test runs the collector server as a process of its own (tests/integration/collector_harness.py),
sends spans to Jaeger with current timestamps, and reads back what reached Kafka after the test began.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import redis
from kafka import TopicPartition

from clover.config import Config
from jobs.buckets import bucket_ms, ms_to_datetime, shard_of
from stack.launcher import Launcher
from tests.integration.collector_harness import CollectorProcess, exactly, kafka_mark, kafka_spans
from tests.integration.test_collector_pipeline import jaeger_has, send_traces, span_rows, track
from tests.waiting import wait_until

# A short overlap, for the outage test: its spans fall behind the watermark's overlap in seconds.
SHORT_OVERLAP_S = 3.0


def sent_now(cfg: Config, service: str, count: int = 3) -> list[dict[str, Any]]:
    """``count`` traces of two spans each, starting now, once Jaeger returns them."""
    made = send_traces(cfg, service, count, time.time_ns())
    wait_until(lambda: jaeger_has(cfg, [m["trace_id"] for m in made]), 60, what="Jaeger to return the traces")
    return made


def idents(made: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["trace_id"], span_id) for m in made for span_id in (m["root_id"], m["child_id"])]


def trace_ids(made: list[dict[str, Any]]) -> list[str]:
    return [m["trace_id"] for m in made]


def stored(cassandra: Any, cfg: Config, made: list[dict[str, Any]]) -> tuple[Counter[tuple[str, str]], ...]:
    """The (trace id, span id) pairs of ``made`` in visibility.spans and in spans_by_bucket."""
    spans = Counter((r.traceid, r.spanid) for r in span_rows(cassandra, trace_ids(made)))
    bucketed: Counter[tuple[str, str]] = Counter()
    for m in made:
        starts = (m["start_us"], m["start_us"] + 1000)  # the root's and the child's
        for bucket in sorted({bucket_ms(start_us, cfg.bucket_seconds) for start_us in starts}):
            rows = cassandra.execute(
                "SELECT traceid, spanid FROM spans_by_bucket WHERE bucket = %s AND shard = %s AND traceid = %s",
                (ms_to_datetime(bucket), shard_of(m["trace_id"]), m["trace_id"]),
            )
            bucketed.update((r.traceid, r.spanid) for r in rows)
    return spans, bucketed


def tracked_alone(cfg: Config, store: redis.Redis, prefix: str) -> tuple[str, dict[TopicPartition, int]]:
    """A new service, the only one tracked, and the Kafka offsets from which to read back its spans."""
    service = f"{prefix}-{uuid.uuid4().hex[:6]}"
    track(store, [service])
    return service, kafka_mark(cfg)


def collect_once(log: Path) -> None:
    """Start a collector, let it publish what the backend holds, and stop it."""
    with CollectorProcess(log) as collector:
        collector.start()
        collector.wait_cycles()
        collector.stop()


def assert_stored_once(cassandra: Any, cfg: Config, made: list[dict[str, Any]]) -> None:
    expected = exactly(idents(made))
    wait_until(lambda: stored(cassandra, cfg, made) == (expected, expected), 180,
               what=f"{len(expected)} spans in spans and spans_by_bucket")  # fmt: skip


def test_a_restarted_collector_resumes_without_gaps_or_repeats(
    cfg: Config, store: redis.Redis, stack: Launcher, tmp_path: Path
) -> None:
    service, mark = tracked_alone(cfg, store, "restart")
    # The default 30 s overlap: after the restart, the spans sent before it are read again.
    with CollectorProcess(tmp_path / "collector.log") as collector:
        collector.start()
        before = sent_now(cfg, service)
        collector.wait_cycles()
        collector.stop()
        during = sent_now(cfg, service)
        collector.start()
        collector.wait_cycles()
        after = sent_now(cfg, service)
        collector.wait_cycles()
        assert collector.status().duplicate_spans >= len(idents(before))  # they were read again, and dropped
        collector.stop()
    made = before + during + after
    assert kafka_spans(cfg, mark, trace_ids(made)) == exactly(idents(made))


def test_a_collector_killed_while_kafka_is_down_loses_no_span(
    cfg: Config, store: redis.Redis, cassandra: Any, ingest: Launcher, tmp_path: Path
) -> None:
    service, mark = tracked_alone(cfg, store, "outkill")
    with CollectorProcess(tmp_path / "collector.log", overlap_s=SHORT_OVERLAP_S) as collector:
        collector.start()
        before = sent_now(cfg, service)
        collector.wait_cycles()
        ingest.down(["kafka"])
        try:
            during = sent_now(cfg, service)
            collector.wait_cycles(drained=False)
            assert collector.status().buffered_records == len(idents(during))
            # Let the outage's spans fall behind the overlap of every later cycle's watermark.
            last_start_s = max(m["start_us"] for m in during) / 1_000_000
            wait_until(lambda: time.time() > last_start_s + SHORT_OVERLAP_S + 1, 30, what="the overlap to pass")
            collector.wait_cycles(drained=False)
            collector.kill()
            collector.start()
            after_kill = sent_now(cfg, service)
            collector.wait_cycles(drained=False)
        finally:
            ingest.up(["kafka"])
        collector.wait_cycles()
        collector.stop()
    made = before + during + after_kill
    assert kafka_spans(cfg, mark, trace_ids(made)) == exactly(idents(made))
    assert_stored_once(cassandra, cfg, made)


def test_a_collector_killed_between_kafka_ack_and_watermark_write_loses_nothing(
    cfg: Config, store: redis.Redis, cassandra: Any, ingest: Launcher, tmp_path: Path
) -> None:
    service, mark = tracked_alone(cfg, store, "ackkill")
    log = tmp_path / "collector.log"
    first = sent_now(cfg, service)
    collect_once(log)
    second = sent_now(cfg, service)
    marker = tmp_path / "acked"
    with CollectorProcess(log, hold_marker=marker) as held:
        held.start()
        wait_until(marker.exists, 60, what="Kafka to acknowledge the second spans")
        held.kill()
    assert marker.read_text() == str(len(idents(second)))  # the first spans were not sent again
    collect_once(log)
    # The kill cut off the record of the second spans only: they went to Kafka twice, and once to
    # each table; the first spans, recorded as sent, once.
    made = first + second
    assert kafka_spans(cfg, mark, trace_ids(made)) == exactly(idents(first)) + exactly(idents(second), 2)
    assert_stored_once(cassandra, cfg, made)
