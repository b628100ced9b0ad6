"""Cassandra -> Redis: the analysed visibility results (the original's CloverFast and CloverSlow).

Run it with ``./spark-submit.sh jobs/visibility.py`` (runs while the collector is started) or
with ``--once``.

Each run is incremental. ``visibility.bucket_changes`` says which time buckets the ingest wrote
since the last run; only those buckets' spans are read (one read), and one aggregation
(jobs/facts.py) turns them into partial aggregates per (bucket, kind, key): counts, sums, min,
max and a quantile sketch. A recomputed bucket replaces its old contribution in the running
totals (subtract the old aggregate, add the new), so the whole-retention figures are exact
without rescanning anything, and the sliding window (default 5 minutes) is the merge of its
buckets' aggregates. A run holds the visibility lease (clover/lease.py) from its first read to
its publication, so a clear never interleaves with it; its state writes are consistent after a
crash (jobs/state.py); results are published to Redis atomically (jobs/publish.py).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import redis
from cassandra.cluster import Cluster
from cassandra.query import ValueSequence
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from clover import keys, schema
from clover.config import Config
from clover.lease import Lease, LeaseLost
from clover.logs import setup_logging
from jobs import kinds
from jobs.aggregates import Aggregate, SlidingExtremes
from jobs.buckets import SHARDS, datetime_to_ms, ms_to_datetime, window_buckets
from jobs.facts import SPAN_COLUMNS, bucket_facts, fold_facts
from jobs.graph import GRAPH_COLUMNS, earlier_buckets, graph_hashes, with_callers, with_next_buckets
from jobs.kinds import AggregateKey
from jobs.publish import Publisher, ResultSet, Window, build_results
from jobs.retry import Stopped, with_backoff
from jobs.session import drop_cassandra_sessions, spark_session
from jobs.state import AnalyticsState, StateStore, select_by_buckets
from jobs.status import analytics_status_file, write_report

log = logging.getLogger("clover.visibility")

OVERLAP = timedelta(seconds=30)
# Buckets aggregated in one Spark step: a large backlog (a first run over days of data) is
# taken in steps of this size, so the memory a step needs stays bounded; a tail of less than a
# tenth of a step joins the step before (each step costs its own Spark jobs).
BUCKETS_PER_STEP = 50
# Expired buckets taken out of the totals in one run at most (the rest in the next runs).
MAX_EXPIRED_BUCKETS = 2000


class ClearRequested(RuntimeError):
    """Visibility is being cleared: the run gives up its lease at the next step."""


class VisibilityAnalytics:
    """The incremental analytics over one Spark session, one Cassandra session and Redis."""

    def __init__(self, spark: SparkSession, cfg: Config, window_s: int = 300, graph: bool = True):
        self.spark = spark
        self.cfg = cfg
        self.window_s = window_s
        self.graph = graph  # the callers of requests, and the graph's edges (jobs/graph.py)
        self._connect()
        self.store = redis.Redis.from_url(cfg.redis_url, decode_responses=True)
        self.publisher = Publisher(self.store)
        self.state = AnalyticsState()

    def _connect(self) -> None:
        """A Cassandra session, the hosts' names resolved now (the driver resolves them only here)."""
        self.cluster = Cluster(list(self.cfg.cassandra_hosts), port=self.cfg.cassandra_port)
        self.db = self.cluster.connect(schema.KEYSPACE)
        self.states = StateStore(self.db)

    def reconnect(self) -> None:
        """New Cassandra sessions after a failed run, the connector's and the analytics' own: a
        connector session whose schema refresh failed while Cassandra was away waits forever on
        the next read (jobs/session.py), and a Cassandra replaced meanwhile may be at another
        address (a new pod), which the old session, knowing only the old one, would never reach."""
        log.info("closed %d Cassandra sessions of the connector", drop_cassandra_sessions(self.spark))
        self.cluster.shutdown()
        self._connect()

    def close(self) -> None:
        self.cluster.shutdown()

    # -- state ---------------------------------------------------------------------------------

    def load_state(self, now: float | None = None, lease_wait_s: float = 60.0) -> None:
        """Reload the running totals and the window's buckets (after a start or a failed run), under
        the lease: a clear truncates table after table, and a load in between would mix them."""
        with Lease(self.store, keys.VISIBILITY_LEASE) as lease:
            if not lease.acquire(lease_wait_s):
                raise LeaseLost(f"{keys.VISIBILITY_LEASE} was not free for {lease_wait_s:.0f}s")
            self._load_state(now)

    def _load_state(self, now: float | None = None) -> None:
        now_ms = int((now or time.time()) * 1000)
        self.state = self.states.load(self._window_buckets(now_ms), self._retention_start(now_ms))

    def _window_buckets(self, now_ms: int) -> list[int]:
        return window_buckets(now_ms, self.window_s, self.cfg.bucket_seconds)

    def _retention_start(self, now_ms: int) -> int:
        width = self.cfg.bucket_seconds * 1000
        return (now_ms - self.cfg.retention_seconds * 1000) // width * width

    # -- one run -------------------------------------------------------------------------------

    def changed_buckets(self, now: datetime) -> tuple[list[int], datetime | None]:
        """Buckets written since the watermark (minus an overlap for late markers), and the
        newest change time seen."""
        watermark = self.state.progress.watermark
        since = (watermark - OVERLAP) if watermark else None
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
        buckets, newest = set(), watermark
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

    def read_spans(self, buckets: list[int], columns: tuple[str, ...] | None = None) -> DataFrame:
        """The spans of exactly these buckets: a partition-key read (bucket IN …, shard IN …)."""
        spans = (
            self.spark.read.format("org.apache.spark.sql.cassandra")
            .options(keyspace=schema.KEYSPACE, table="spans_by_bucket")
            .load()
        )
        wanted = spans.where(F.col("bucket").isin([ms_to_datetime(b) for b in buckets])).where(
            F.col("shard").isin(list(range(SHARDS)))
        )
        return wanted.select(*(columns or (*SPAN_COLUMNS, *(GRAPH_COLUMNS if self.graph else ()))))

    def facts(self, spans: DataFrame, buckets: list[int]) -> DataFrame:
        """The partial aggregates of ``spans``, the read of ``buckets`` (jobs/facts.py), with the
        graph's edges (jobs/graph.py; parents also among the spans of the bucket before)."""
        if not self.graph:
            return bucket_facts(spans)
        width = self.cfg.bucket_seconds * 1000
        earlier = self.read_spans(earlier_buckets(buckets, width), ("bucket", "traceid", "spanid", "service"))
        return bucket_facts(with_callers(spans, earlier, width))

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
        query = "SELECT bucket, count(*) AS n FROM metrics_by_bucket WHERE bucket IN %s GROUP BY bucket"
        return {datetime_to_ms(row.bucket): row.n for row in select_by_buckets(self.db, query, buckets)}

    def check_epoch(self, now: float | None = None) -> None:
        """After a truncation (cloverctl clear visibility) start over from empty state."""
        if self.states.epoch() != self.state.epoch:
            log.info("visibility tables were truncated: starting from empty state")
            self._load_state(now)

    def run_once(self, now: float | None = None, lease_wait_s: float = 60.0) -> ResultSet | None:
        """One run under the visibility lease; None when a clear held the lease the whole wait."""
        with Lease(self.store, keys.VISIBILITY_LEASE) as lease:
            if not lease.acquire(lease_wait_s):
                log.info("visibility is being cleared: run skipped")
                return None
            return self._run(lease, now)

    def _run(self, lease: Lease, now: float | None) -> ResultSet:
        started = time.monotonic()
        self.check_epoch(now)
        now_dt = datetime.fromtimestamp(now or time.time(), tz=UTC)
        progress = self.state.progress
        buckets, newest = self.changed_buckets(now_dt)
        if self.graph and buckets:  # a late parent's child may be in the next bucket
            width = self.cfg.bucket_seconds * 1000
            buckets = with_next_buckets(buckets, width, datetime_to_ms(now_dt) // width * width)
        retained = [b for b in buckets if b >= progress.expired_before]  # older ones left the retention
        self.states.begin(progress)
        for step in steps_of(retained, BUCKETS_PER_STEP):  # a backlog in bounded steps
            self._still_ours(lease)
            self._recompute(step)
        if newest is not None:
            progress.watermark = newest
        self._expire(now_dt)
        self._still_ours(lease)
        self.states.commit(progress)
        now_ms = datetime_to_ms(now_dt)
        window_start = self._window_buckets(now_ms)[0]
        self.state.recent = {b: a for b, a in self.state.recent.items() if b >= window_start}
        window: dict[AggregateKey, Aggregate] = {}
        for aggregates in self.state.recent.values():
            for key, agg in aggregates.items():
                window.setdefault(key, Aggregate()).add(agg)
        results = build_results(self.store, self.db, self.state.totals, window, window_start * 1000, now_ms * 1000)
        if self.graph:
            results.hashes.update(graph_hashes(self.state.totals, window, Window(window_start * 1000, now_ms * 1000)))
        self.publisher.publish(results, lease)
        log.info("run: %d buckets recomputed, %d keys published in %.2fs", len(buckets), len(results.keys()),
                 time.monotonic() - started)  # fmt: skip
        return results

    def _still_ours(self, lease: Lease) -> None:
        lease.check()
        if self.store.exists(keys.VISIBILITY_CLEAR_REQUESTED):
            raise ClearRequested("visibility is being cleared")

    def _expire(self, now: datetime) -> None:
        """Take the buckets that left the retention out of the running totals.

        Counts, sums, sketches, min and max are exact after this. The first-seen time of what
        remains is moved up to the cutoff (request rates stay right), and a key with nothing
        left is dropped."""
        progress = self.state.progress
        cutoff = self._retention_start(datetime_to_ms(now))
        start = max(progress.expired_before, progress.first_bucket or cutoff)
        if start >= cutoff:
            return
        width = self.cfg.bucket_seconds * 1000
        end = min(cutoff, start + MAX_EXPIRED_BUCKETS * width)
        expired = list(range(start, end, width))
        touched: set[AggregateKey] = set()
        for aggregates in self.states.read_buckets(expired).values():
            for key, agg in aggregates.items():
                if key in self.state.totals:
                    self.state.totals[key].subtract(agg)
                    touched.add(key)
        gone = {k for k in touched if self.state.totals[k].count <= 0}
        for key in touched - gone:
            total = self.state.totals[key]
            if total.first_us is not None:
                total.first_us = max(total.first_us, end * 1000)
            if key in self.state.extremes:
                self.state.extremes[key].expire(end)
        for key in gone:
            del self.state.totals[key]
            self.state.extremes.pop(key, None)
        self.states.delete_totals(gone)
        self._write_totals(touched - gone)
        progress.expired_before = end
        log.info("expired %d buckets before %s (%d keys changed)", len(expired), ms_to_datetime(end), len(touched))

    def _recompute(self, buckets: list[int]) -> None:
        started = time.monotonic()
        spans = self.read_spans(buckets).persist()
        try:
            fresh = fold_facts(self.facts(spans, buckets).collect())
            aggregated = time.monotonic()
            new_traces = self.count_new_traces(spans)
        finally:
            spans.unpersist()
        counted = time.monotonic()
        metric_counts = self.count_metrics(buckets)
        missing = [b for b in buckets if b not in self.state.recent]
        old = {
            **self.states.read_buckets(missing),
            **{b: self.state.recent[b] for b in buckets if b in self.state.recent},
        }
        progress = self.state.progress
        if buckets and (progress.first_bucket is None or buckets[0] < progress.first_bucket):
            progress.first_bucket = buckets[0]
        touched: set[AggregateKey] = set()
        bucket_rows: list[tuple[int, AggregateKey, Aggregate]] = []
        for bucket in buckets:
            previous = old.get(bucket, {})
            current = fresh.get(bucket, {})
            traces = Aggregate(count=previous.get(kinds.TRACES.key(), Aggregate()).count + new_traces.get(bucket, 0))
            if traces.count:
                current[kinds.TRACES.key()] = traces
            if metric_counts.get(bucket):
                current[kinds.METRICS.key()] = Aggregate(count=metric_counts[bucket])
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
            bucket_rows.extend((bucket, key, agg) for key, agg in current.items())
            self.state.recent[bucket] = current
        self.states.write_buckets(bucket_rows)
        self._write_totals(touched)
        log.info(
            "recomputed %d buckets: read+aggregate %.2fs, new traces %.2fs, state %.2fs (%d aggregate rows)",
            len(buckets),
            aggregated - started,
            counted - aggregated,
            time.monotonic() - counted,
            len(bucket_rows),
        )

    def _write_totals(self, touched: Iterable[AggregateKey]) -> None:
        """Store the totals of ``touched``, their min and max taken from the buckets still retained."""
        rows = []
        for key in touched:
            total, extremes = self.state.totals[key], self.state.extremes.get(key, SlidingExtremes())
            if extremes.lows or extremes.highs:
                total.min_us, total.max_us = extremes.low(), extremes.high()
            rows.append((key, total, extremes))
        self.states.write_totals(rows)

    # -- the runner ----------------------------------------------------------------------------

    def enabled(self) -> bool:
        """Whether the collector is started (StartCollector sets the flag; StopCollector clears it)."""
        return self.store.get(keys.ANALYTICS_ENABLED) == "1"

    def pending_changes(self) -> bool:
        """Whether the ingest marked a bucket after the newest change already processed."""
        watermark = self.state.progress.watermark
        if watermark is None:
            return True
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        minutes = [now - timedelta(minutes=1), now]
        row = self.db.execute(
            "SELECT changed_at FROM bucket_changes WHERE ingest_minute IN %s AND changed_at > %s LIMIT 1",
            (ValueSequence(minutes), watermark),
        ).one()
        return row is not None

    def run(self, interval_s: float, stop: threading.Event, poll_s: float = 1.0) -> None:
        """While the collector is started, run at least every ``interval_s`` (the window slides),
        and as soon as the ingest marks a change (checked every ``poll_s``)."""
        backoff = 1.0
        runs, last_seconds, last_run = 0, 0.0, 0.0
        while not stop.is_set():
            enabled = False
            try:
                enabled = self.enabled()
                due = time.monotonic() - last_run >= interval_s
                if enabled and (due or self.pending_changes()):
                    started = time.monotonic()
                    if self.run_once(lease_wait_s=poll_s) is not None:
                        runs, last_run = runs + 1, started
                        last_seconds = time.monotonic() - started
                backoff = 1.0
            except (ClearRequested, LeaseLost) as exc:
                log.info("run abandoned (%s); reloading the state", exc)
                self._reload_quietly()
                continue
            except Exception as exc:  # Cassandra, Redis or Spark may go away; the runner survives
                write_report(analytics_status_file(self.cfg), runs=runs, enabled=enabled, last_error=str(exc)[:500])
                log.warning("run failed (%s); retrying in %.0fs", exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                self._reload_quietly(reconnect=True)
                continue
            write_report(analytics_status_file(self.cfg), runs=runs, enabled=enabled, last_run_seconds=last_seconds)
            stop.wait(poll_s)

    def _reload_quietly(self, reconnect: bool = False) -> None:
        try:
            if reconnect:
                self.reconnect()
            self.load_state()
        except Exception as reload_error:  # still down: the next attempt retries
            log.warning("state reload failed: %s", reload_error)


def steps_of(buckets: list[int], size: int) -> list[list[int]]:
    """``buckets`` in steps of ``size``, the last one taking a tail shorter than a tenth of that."""
    found = [buckets[start : start + size] for start in range(0, len(buckets), size)]
    if len(found) > 1 and len(found[-1]) < size // 10:
        found[-2:] = [found[-2] + found[-1]]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Clover visibility analytics: Cassandra -> Redis")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between runs")
    parser.add_argument("--window", type=int, default=300, help="sliding window, seconds")
    parser.add_argument("--once", action="store_true", help="one run, then exit")
    parser.add_argument("--no-graph", action="store_true", help="leave out the graph's edges (callers)")
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
        analytics = with_backoff(
            lambda: VisibilityAnalytics(spark, cfg, window_s=args.window, graph=not args.no_graph), "connecting", stop
        )
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
