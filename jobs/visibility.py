"""Cassandra -> Redis: the analysed visibility results (the original's CloverFast and CloverSlow).

Run it with ``./spark-submit.sh jobs/visibility.py`` (every 5 s until stopped) or with ``--once``.

Each run is incremental. ``visibility.bucket_changes`` says which time buckets the ingest wrote
since the last run; only those buckets' spans are read (one read), and a single aggregation
turns them into partial aggregates per (bucket, kind, key) — counts, sums, min, max and a
quantile sketch. A recomputed bucket replaces its old contribution in the running totals
(subtract the old aggregate, add the new), so the whole-retention figures are exact without
rescanning anything, and the sliding window (default 5 minutes) is the merge of its buckets'
aggregates. Results are published to Redis atomically (jobs/publish.py).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from cassandra.cluster import Cluster
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.query import ValueSequence
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from clover import keys, schema
from clover.config import Config
from clover.logs import setup_logging
from jobs.aggregates import LOG_GAMMA, ZERO_BIN, Aggregate, SlidingExtremes
from jobs.publish import Publisher, ResultSet, build_results
from jobs.retry import Stopped, with_backoff
from jobs.session import spark_session
from jobs.status import write_report

log = logging.getLogger("clover.visibility")

# Kinds of partial aggregates: what their key is.
SPANS = "spans"  # key "": every span
TRACES = "traces"  # key "": traces counted for the first time in this bucket
METRICS = "metrics"  # key "": metric samples
SERVICE = "svc"  # a service's own server-side spans (timed)
SERVICE_URL = "svc_url"  # the same per URL, key '["service","url"]' (timed)
URL, AGENT, NODE = "url", "ua", "node"
STATUS_URL, NODE_URL = "status_url", "node_url"  # keys '["code","url"]', '["node","url"]'
OPERATION, UPSTREAM, STATUS = "op", "upstream", "status"
TIMED = (SERVICE, SERVICE_URL)

Key = tuple[str, str]  # (kind, key)
BucketAggregates = dict[Key, Aggregate]

OVERLAP = timedelta(seconds=30)
# Buckets aggregated in one Spark step: a large backlog (a first run over days of data) is
# taken in steps of this size, so the memory a step needs stays bounded.
MAX_BUCKETS_PER_STEP = 50
# Expired buckets taken out of the totals in one run at most (the rest in the next runs).
MAX_EXPIRED_BUCKETS = 2000
SPAN_COLUMNS = ("bucket", "traceid", "service", "node_id", "operation_name", "http_url", "user_agent", "status_code",
                "upstream_cluster", "duration_us", "start_time")  # fmt: skip


def bucket_facts(spans: DataFrame) -> DataFrame:
    """One row per (bucket, kind, key) with the partial aggregate of its spans.

    A span is a service's own server-side span (timed under ``svc``/``svc_url``) when it has a
    status code and is not an outbound call (upstream_cluster not ``outbound…``)."""
    url, status, node, service = F.col("http_url"), F.col("status_code"), F.col("node_id"), F.col("service")
    own_span = status.isNotNull() & (
        F.col("upstream_cluster").isNull() | ~F.col("upstream_cluster").startswith("outbound")
    )

    def pair(a: Any, b: Any) -> Any:
        return F.when(a.isNotNull() & b.isNotNull(), F.to_json(F.array(a.cast("string"), b)))

    entries = F.array(
        *[
            F.struct(F.lit(kind).alias("kind"), value.alias("key"))
            for kind, value in (
                (SPANS, F.lit("")),
                (URL, url),
                (AGENT, F.col("user_agent")),
                (NODE, node),
                (STATUS_URL, pair(status, url)),
                (NODE_URL, pair(node, url)),
                (OPERATION, F.col("operation_name")),
                (UPSTREAM, F.col("upstream_cluster")),
                (STATUS, status.cast("string")),
                (SERVICE, F.when(own_span, service)),
                (SERVICE_URL, F.when(own_span, pair(service, url))),
            )
        ]
    )
    duration = F.col("duration_us")
    sketch_bin = F.when(duration > 0, F.ceil(F.log(duration) / F.lit(LOG_GAMMA))).otherwise(F.lit(ZERO_BIN))
    facts = spans.select(
        F.unix_millis("bucket").alias("bucket_ms"),
        duration,
        status,
        F.unix_micros("start_time").alias("start_us"),
        sketch_bin.cast("int").alias("bin"),
        F.explode(entries).alias("e"),
    ).where(F.col("e.key").isNotNull())
    timed = F.col("e.kind").isin(*TIMED)
    bin_key = F.when(timed, F.col("bin")).alias("bin")
    per_bin = facts.groupBy("bucket_ms", F.col("e.kind").alias("kind"), F.col("e.key").alias("key"), bin_key).agg(
        F.count(F.lit(1)).alias("count"),
        F.sum(F.when(timed, duration)).alias("sum_us"),
        F.min(F.when(timed, duration)).alias("min_us"),
        F.max(F.when(timed, duration)).alias("max_us"),
        F.sum(F.when(timed & (status >= 400) & (status < 500), 1).otherwise(0)).alias("n4xx"),
        F.sum(F.when(timed & (status >= 500), 1).otherwise(0)).alias("n5xx"),
        F.min(F.when(timed, F.col("start_us"))).alias("first_us"),
        F.max(F.when(timed, F.col("start_us"))).alias("last_us"),
    )
    # One row per (bucket, kind, key): the sketch becomes a map of bin -> count.
    return per_bin.groupBy("bucket_ms", "kind", "key").agg(
        F.sum("count").alias("count"),
        F.sum("sum_us").alias("sum_us"),
        F.min("min_us").alias("min_us"),
        F.max("max_us").alias("max_us"),
        F.sum("n4xx").alias("n4xx"),
        F.sum("n5xx").alias("n5xx"),
        F.min("first_us").alias("first_us"),
        F.max("last_us").alias("last_us"),
        F.map_from_entries(F.collect_list(F.when(F.col("bin").isNotNull(), F.struct("bin", "count")))).alias("bins"),
    )


def fold_facts(rows: Iterable[Any]) -> dict[int, BucketAggregates]:
    """The (bucket, kind, key) rows as one Aggregate per key, grouped by bucket."""
    buckets: dict[int, BucketAggregates] = defaultdict(dict)
    for row in rows:
        buckets[row["bucket_ms"]][(row["kind"], row["key"])] = Aggregate(
            count=row["count"],
            sum_us=row["sum_us"] or 0,
            min_us=row["min_us"],
            max_us=row["max_us"],
            n4xx=row["n4xx"],
            n5xx=row["n5xx"],
            first_us=row["first_us"],
            last_us=row["last_us"],
            bins=dict(row["bins"] or {}),
        )
    return buckets


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def datetime_to_ms(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return round(value.timestamp() * 1000)


@dataclass
class AnalyticsState:
    """What the runner keeps between runs (and reloads from Cassandra after a restart)."""

    epoch: str = ""
    watermark: datetime | None = None
    totals: dict[Key, Aggregate] = field(default_factory=dict)
    # What the totals' min and max become when their buckets leave the retention.
    extremes: dict[Key, SlidingExtremes] = field(default_factory=dict)
    recent: dict[int, BucketAggregates] = field(default_factory=dict)
    # (changed_at ms, bucket ms) of the change marks already processed within the overlap
    seen_marks: set[tuple[int, int]] = field(default_factory=set)
    # No trace was ever counted: every trace of a run is new (the first, full run skips the lookup).
    nothing_counted: bool = False
    # Earliest bucket ever aggregated, and the start of the retention already applied to the totals.
    first_bucket: int | None = None
    expired_before: int = 0


AGGREGATE_COLUMNS = "count, sum_us, min_us, max_us, n4xx, n5xx, first_us, last_us, bins"


def aggregate_from_row(row: Any) -> Aggregate:
    return Aggregate(
        count=row.count or 0,
        sum_us=row.sum_us or 0,
        min_us=row.min_us,
        max_us=row.max_us,
        n4xx=row.n4xx or 0,
        n5xx=row.n5xx or 0,
        first_us=row.first_us,
        last_us=row.last_us,
        bins=dict(row.bins or {}),
    )


def aggregate_values(agg: Aggregate) -> tuple[Any, ...]:
    return (agg.count, agg.sum_us, agg.min_us, agg.max_us, agg.n4xx, agg.n5xx, agg.first_us, agg.last_us, agg.bins)


def extremes_from_row(row: Any) -> SlidingExtremes:
    if row.low_buckets is None and row.high_buckets is None:  # a total written before extremes were kept
        return SlidingExtremes(
            lows={} if row.min_us is None else {0: row.min_us}, highs={} if row.max_us is None else {0: row.max_us}
        )
    return SlidingExtremes(lows=dict(row.low_buckets or {}), highs=dict(row.high_buckets or {}))


class VisibilityAnalytics:
    """The incremental analytics over one Spark session, one Cassandra session and Redis."""

    def __init__(self, spark: SparkSession, cfg: Config, window_s: int = 300):
        self.spark = spark
        self.cfg = cfg
        self.window_s = window_s
        self.cluster = Cluster(list(cfg.cassandra_hosts), port=cfg.cassandra_port)
        self.db = self.cluster.connect(schema.KEYSPACE)
        self.store = redis.Redis.from_url(cfg.redis_url, decode_responses=True)
        self.publisher = Publisher(self.store)
        self.state = AnalyticsState()
        self._statements()

    def _statements(self) -> None:
        prepare = self.db.prepare
        self.insert_bucket_agg = prepare(
            f"INSERT INTO bucket_aggregates (bucket, kind, key, {AGGREGATE_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self.insert_total = prepare(
            f"INSERT INTO aggregate_totals (kind, key, {AGGREGATE_COLUMNS}, low_buckets, high_buckets)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self.put_state = prepare("INSERT INTO analytics_state (name, value) VALUES (?, ?)")

    def close(self) -> None:
        self.cluster.shutdown()

    # -- state ---------------------------------------------------------------------------------

    def _read_state(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM analytics_state WHERE name = %s", (name,)).one()
        return None if row is None else str(row.value)

    def load_state(self) -> None:
        """Reload the running totals and the window's buckets (after a start or a truncation)."""
        epoch = self._read_state("epoch")
        if epoch is None:
            epoch = uuid.uuid4().hex
            self.db.execute(self.put_state, ("epoch", epoch))
        watermark = self._read_state("watermark")
        rows = list(
            self.db.execute(f"SELECT kind, key, {AGGREGATE_COLUMNS}, low_buckets, high_buckets FROM aggregate_totals")
        )
        totals = {(r.kind, r.key): aggregate_from_row(r) for r in rows}
        self.state = AnalyticsState(
            epoch=epoch,
            watermark=datetime.fromisoformat(watermark) if watermark else None,
            totals=totals,
            extremes={(r.kind, r.key): extremes_from_row(r) for r in rows},
            recent=self._read_bucket_aggregates(self._window_buckets()),
            nothing_counted=self.db.execute("SELECT traceid FROM counted_traces LIMIT 1").one() is None,
            first_bucket=int(first) if (first := self._read_state("first_bucket")) else None,
            expired_before=int(self._read_state("expired_before") or 0),
        )
        log.info("state loaded: %d totals, watermark %s", len(totals), self.state.watermark)

    def _window_buckets(self, now: float | None = None) -> list[int]:
        now_ms = int((now or time.time()) * 1000)
        width = self.cfg.bucket_seconds * 1000
        first = (now_ms - self.window_s * 1000) // width * width
        return list(range(first, now_ms + 1, width))

    def _read_bucket_aggregates(self, buckets: list[int]) -> dict[int, BucketAggregates]:
        found: dict[int, BucketAggregates] = {}
        for start in range(0, len(buckets), 100):
            chunk = [ms_to_datetime(b) for b in buckets[start : start + 100]]
            rows = self.db.execute(
                f"SELECT bucket, kind, key, {AGGREGATE_COLUMNS} FROM bucket_aggregates WHERE bucket IN %s",
                (ValueSequence(chunk),),
            )
            for row in rows:
                found.setdefault(datetime_to_ms(row.bucket), {})[(row.kind, row.key)] = aggregate_from_row(row)
        return found

    # -- one run -------------------------------------------------------------------------------

    def changed_buckets(self, now: datetime) -> tuple[list[int], datetime | None]:
        """Buckets written since the watermark (minus an overlap for late markers), and the
        newest change time seen."""
        since = (self.state.watermark - OVERLAP) if self.state.watermark else None
        if since is None:
            rows = self.db.execute("SELECT changed_at, bucket FROM bucket_changes")
        else:
            minutes, minute = [], since.replace(second=0, microsecond=0)
            while minute <= now:
                minutes.append(minute)
                minute += timedelta(minutes=1)
            rows = self.db.execute(
                "SELECT changed_at, bucket FROM bucket_changes WHERE ingest_minute IN %s AND changed_at > %s",
                (ValueSequence(minutes[-1440:]), since),
            )
        buckets, newest = set(), self.state.watermark
        for row in rows:
            changed = row.changed_at.replace(tzinfo=UTC)
            mark = (datetime_to_ms(changed), datetime_to_ms(row.bucket))
            if mark in self.state.seen_marks:
                continue  # re-read only because of the overlap: that change is already counted
            self.state.seen_marks.add(mark)
            buckets.add(mark[1])
            newest = changed if newest is None or changed > newest else newest
        if newest is not None:
            horizon = datetime_to_ms(newest - 2 * OVERLAP)
            self.state.seen_marks = {m for m in self.state.seen_marks if m[0] >= horizon}
        return sorted(buckets), newest

    def read_spans(self, buckets: list[int]) -> DataFrame:
        """The spans of exactly these buckets: a partition-key read (bucket IN …, shard IN …)."""
        spans = (
            self.spark.read.format("org.apache.spark.sql.cassandra")
            .options(keyspace=schema.KEYSPACE, table="spans_by_bucket")
            .load()
        )
        wanted = spans.where(F.col("bucket").isin([ms_to_datetime(b) for b in buckets])).where(
            F.col("shard").isin(list(range(schema.SHARDS)))
        )
        return wanted.select(*SPAN_COLUMNS)

    def count_new_traces(self, spans: DataFrame) -> dict[int, int]:
        """Traces not counted before, by the bucket of their earliest span in this read; they
        are recorded in counted_traces so no later run counts them again."""
        ids = spans.groupBy("traceid").agg(F.min("bucket").alias("first_bucket"))
        if self.state.nothing_counted:
            return self._record_new_traces(ids.select("traceid", F.col("first_bucket").alias("bucket")))
        counted = (
            self.spark.read.format("org.apache.spark.sql.cassandra")
            .options(keyspace=schema.KEYSPACE, table="counted_traces", directJoinSetting="on")
            .load()
            .select(F.col("traceid").alias("counted_id"))
        )
        # The connector turns this into a direct join (point reads of just these ids). A literal
        # marker column would be computed above that join and be true for every row, so the
        # joined id itself tells whether the trace was counted.
        joined = ids.join(counted, ids["traceid"] == counted["counted_id"], "left")
        return self._record_new_traces(
            joined.where(F.col("counted_id").isNull()).select("traceid", F.col("first_bucket").alias("bucket"))
        )

    def _record_new_traces(self, fresh: DataFrame) -> dict[int, int]:
        """Write the new trace ids to counted_traces; their number by bucket."""
        fresh = fresh.persist()
        try:
            per_bucket = {datetime_to_ms(row.bucket): row["count"] for row in fresh.groupBy("bucket").count().collect()}
            if per_bucket:
                fresh.write.format("org.apache.spark.sql.cassandra").options(
                    keyspace=schema.KEYSPACE, table="counted_traces"
                ).mode("append").save()
        finally:
            fresh.unpersist()
        self.state.nothing_counted = False
        return per_bucket

    def count_metrics(self, buckets: list[int]) -> dict[int, int]:
        counts: dict[int, int] = {}
        for start in range(0, len(buckets), 100):
            chunk = [ms_to_datetime(b) for b in buckets[start : start + 100]]
            rows = self.db.execute(
                "SELECT bucket, count(*) AS n FROM metrics_by_bucket WHERE bucket IN %s GROUP BY bucket",
                (ValueSequence(chunk),),
            )
            for row in rows:
                counts[datetime_to_ms(row.bucket)] = row.n
        return counts

    def check_epoch(self) -> None:
        """After a truncation (cloverctl clear visibility) start over from empty state."""
        if self._read_state("epoch") != self.state.epoch:
            log.info("visibility tables were truncated: starting from empty state")
            self.load_state()

    def run_once(self, now: float | None = None) -> ResultSet:
        started = time.monotonic()
        self.check_epoch()
        now_dt = datetime.fromtimestamp(now or time.time(), tz=UTC)
        buckets, newest = self.changed_buckets(now_dt)
        retained = [b for b in buckets if b >= self.state.expired_before]  # older ones left the retention
        for start in range(0, len(retained), MAX_BUCKETS_PER_STEP):  # a backlog in bounded steps
            self._recompute(retained[start : start + MAX_BUCKETS_PER_STEP])
        if newest is not None:
            self.state.watermark = newest
            self.db.execute(self.put_state, ("watermark", newest.isoformat()))
        self._expire(now_dt)
        window_buckets = self._window_buckets(now_dt.timestamp())
        self.state.recent = {b: a for b, a in self.state.recent.items() if b >= window_buckets[0]}
        window: dict[Key, Aggregate] = {}
        for aggregates in self.state.recent.values():
            for key, agg in aggregates.items():
                window.setdefault(key, Aggregate()).add(agg)
        results = build_results(self.store, self.db, self.state.totals, window, self.window_s)
        if self._read_state("epoch") != self.state.epoch:
            log.info("visibility was cleared during this run: nothing published")
            return results
        self.publisher.publish(results)
        log.info(
            "run: %d buckets recomputed, %d keys published in %.2fs",
            len(buckets),
            len(results.keys()),
            time.monotonic() - started,
        )
        return results

    def _expire(self, now: datetime) -> None:
        """Take the buckets that left the retention out of the running totals.

        Counts, sums, sketches, min and max are exact after this. The first-seen time of what
        remains is moved up to the cutoff (request rates stay right), and a key with nothing
        left is dropped."""
        width = self.cfg.bucket_seconds * 1000
        cutoff = (datetime_to_ms(now) - self.cfg.retention_seconds * 1000) // width * width
        start = max(self.state.expired_before, self.state.first_bucket or cutoff)
        if start >= cutoff:
            return
        end = min(cutoff, start + MAX_EXPIRED_BUCKETS * width)
        expired = list(range(start, end, width))
        touched: set[Key] = set()
        for aggregates in self._read_bucket_aggregates(expired).values():
            for key, agg in aggregates.items():
                if key in self.state.totals:
                    self.state.totals[key].subtract(agg)
                    touched.add(key)
        gone = [k for k in touched if self.state.totals[k].count <= 0]
        for key in touched - set(gone):
            total = self.state.totals[key]
            if total.first_us is not None:
                total.first_us = max(total.first_us, end * 1000)
            if key in self.state.extremes:
                self.state.extremes[key].expire(end)
        for key in gone:
            del self.state.totals[key]
            self.state.extremes.pop(key, None)
            self.db.execute("DELETE FROM aggregate_totals WHERE kind = %s AND key = %s", key)
        self._write_totals(touched - set(gone))
        self.state.expired_before = end
        self.db.execute(self.put_state, ("expired_before", str(end)))
        log.info("expired %d buckets before %s (%d keys changed)", len(expired), ms_to_datetime(end), len(touched))

    def _recompute(self, buckets: list[int]) -> None:
        started = time.monotonic()
        spans = self.read_spans(buckets).persist()
        try:
            fresh = fold_facts(bucket_facts(spans).collect())
            aggregated = time.monotonic()
            new_traces = self.count_new_traces(spans)
        finally:
            spans.unpersist()
        counted = time.monotonic()
        metric_counts = self.count_metrics(buckets)
        missing = [b for b in buckets if b not in self.state.recent]
        old = {
            **self._read_bucket_aggregates(missing),
            **{b: self.state.recent[b] for b in buckets if b in self.state.recent},
        }
        if buckets and (self.state.first_bucket is None or buckets[0] < self.state.first_bucket):
            self.state.first_bucket = buckets[0]
            self.db.execute(self.put_state, ("first_bucket", str(buckets[0])))
        touched: set[Key] = set()
        bucket_rows = []
        for bucket in buckets:
            previous = old.get(bucket, {})
            current = fresh.get(bucket, {})
            traces = Aggregate(count=previous.get((TRACES, ""), Aggregate()).count + new_traces.get(bucket, 0))
            if traces.count:
                current[(TRACES, "")] = traces
            if metric_counts.get(bucket):
                current[(METRICS, "")] = Aggregate(count=metric_counts[bucket])
            for key in set(previous) | set(current):
                total = self.state.totals.setdefault(key, Aggregate())
                if key in previous:
                    total.subtract(previous[key])
                if key in current:
                    total.add(current[key])
                    self.state.extremes.setdefault(key, SlidingExtremes()).update(
                        bucket, current[key].min_us, current[key].max_us
                    )
                touched.add(key)
            for (kind, key), agg in current.items():
                bucket_rows.append((ms_to_datetime(bucket), kind, key, *aggregate_values(agg)))
            self.state.recent[bucket] = current
        self._execute(self.insert_bucket_agg, bucket_rows)
        self._write_totals(touched)
        log.info(
            "recomputed %d buckets: read+aggregate %.2fs, new traces %.2fs, state %.2fs (%d aggregate rows)",
            len(buckets),
            aggregated - started,
            counted - aggregated,
            time.monotonic() - counted,
            len(bucket_rows),
        )

    def _write_totals(self, touched: Iterable[Key]) -> None:
        """Store the totals of ``touched``, their min and max taken from the buckets still retained."""
        rows = []
        for key in touched:
            total, extremes = self.state.totals[key], self.state.extremes.get(key, SlidingExtremes())
            if extremes.lows or extremes.highs:
                total.min_us, total.max_us = extremes.low(), extremes.high()
            rows.append((*key, *aggregate_values(total), extremes.lows, extremes.highs))
        self._execute(self.insert_total, rows)

    def _execute(self, statement: Any, rows: list[tuple[Any, ...]]) -> None:
        results = execute_concurrent_with_args(self.db, statement, rows, concurrency=64)
        failed = [r for r in results if not r.success]
        if failed:
            raise RuntimeError(f"writing analytics state failed: {failed[0].result_or_exc}")

    # -- the runner ----------------------------------------------------------------------------

    def enabled(self) -> bool:
        """Whether the collector is started (StartCollector sets the flag; StopCollector clears it)."""
        return self.store.get(keys.ANALYTICS_ENABLED) != "0"

    def pending_changes(self) -> bool:
        """Whether the ingest marked a bucket after the newest change already processed."""
        if self.state.watermark is None:
            return True
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        minutes = [now - timedelta(minutes=1), now]
        row = self.db.execute(
            "SELECT changed_at FROM bucket_changes WHERE ingest_minute IN %s AND changed_at > %s LIMIT 1",
            (ValueSequence(minutes), self.state.watermark),
        ).one()
        return row is not None

    def run(self, interval_s: float, stop: threading.Event, poll_s: float = 1.0) -> None:
        """Run at least every ``interval_s`` (the window slides), and as soon as the ingest marks
        a change (checked every ``poll_s``)."""
        backoff = 1.0
        runs, last_seconds, last_run = 0, 0.0, 0.0
        while not stop.is_set():
            enabled = False
            try:
                enabled = self.enabled()
                due = time.monotonic() - last_run >= interval_s
                if enabled and (due or self.pending_changes()):
                    started = time.monotonic()
                    self.run_once()
                    runs, last_run = runs + 1, started
                    last_seconds = time.monotonic() - started
                backoff = 1.0
            except Exception as exc:  # Cassandra, Redis or Spark may go away; the runner survives
                write_report(status_file(self.cfg), runs=runs, enabled=enabled, last_error=str(exc)[:500])
                log.warning("run failed (%s); retrying in %.0fs", exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                try:
                    self.load_state()
                except Exception as reload_error:  # still down: the next attempt retries
                    log.warning("state reload failed: %s", reload_error)
                continue
            write_report(status_file(self.cfg), runs=runs, enabled=enabled, last_run_seconds=last_seconds)
            stop.wait(poll_s)


def status_file(cfg: Config) -> Path:
    """Where the running analytics reports its progress (read by `cloverctl local status`)."""
    return cfg.state_dir / "analytics" / "status.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Clover visibility analytics: Cassandra -> Redis")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between runs")
    parser.add_argument("--window", type=int, default=300, help="sliding window, seconds")
    parser.add_argument("--once", action="store_true", help="one run, then exit")
    args = parser.parse_args(argv)
    setup_logging()
    logging.getLogger("py4j").setLevel(logging.WARNING)
    cfg = Config.from_env()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    spark = spark_session("clover-visibility", cfg)
    try:
        with_backoff(lambda: schema.ensure_schema(cfg), "creating the visibility schema", stop)
        analytics = with_backoff(lambda: VisibilityAnalytics(spark, cfg, window_s=args.window), "connecting", stop)
        with_backoff(analytics.load_state, "loading the analytics state", stop)
    except Stopped:
        spark.stop()
        return 0
    try:
        if args.once:
            analytics.run_once()
        else:
            analytics.run(args.interval, stop)
    finally:
        analytics.close()
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
