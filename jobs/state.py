"""The analytics' state in Cassandra: partial aggregates per bucket, running totals, counted
traces, and its progress; and how a run's writes stay consistent when the run dies half-way.

A run writes many rows (the recomputed buckets' aggregates, the totals they change, the traces
it counted) and then its progress in one row. Before its first write it marks the progress row
*dirty*; the row it writes last clears the mark. A run killed in between leaves the mark, and the
next start discards every derived row and recomputes from the stored spans (``load`` -> ``reset``):
the figures after a crash are those of a fresh full recompute over the same rows, never a mix
of a half-applied run and its retry. A change of ``MODEL`` (what the aggregates mean) does the same.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cassandra.concurrent import execute_concurrent_with_args
from cassandra.query import ValueSequence

from clover import schema
from jobs.aggregates import Aggregate, SlidingExtremes
from jobs.buckets import datetime_to_ms, ms_to_datetime
from jobs.facts import BucketAggregates
from jobs.kinds import AggregateKey

log = logging.getLogger("clover.visibility")

# What the stored aggregates mean. Aggregates of another model are recomputed from the spans.
MODEL = "4: requests by span kind and source, structured keys, the graph's edges, request and response bytes"
DERIVED_TABLES = ("aggregates_by_bucket", "aggregates_by_key", "counted_traces")
AGGREGATE_COLUMNS = (
    "count, errors, sum_us, min_us, max_us, n4xx, n5xx, first_us, last_us, bins, request_bytes, response_bytes"
)


@dataclass
class Progress:
    """The one row a run writes last; ``dirty`` while a run's other writes are under way."""

    watermark: datetime | None = None  # the newest change mark of bucket_changes processed
    first_bucket: int | None = None  # the earliest bucket ever aggregated
    expired_before: int = 0  # buckets before this have been taken out of the totals
    dirty: bool = False

    def to_json(self) -> str:
        return json.dumps({"watermark": self.watermark.isoformat() if self.watermark else None,
                           "first_bucket": self.first_bucket, "expired_before": self.expired_before,
                           "dirty": self.dirty})  # fmt: skip

    @classmethod
    def from_json(cls, text: str | None) -> Progress:
        if not text:
            return cls()
        raw = json.loads(text)
        watermark = raw.get("watermark")
        return cls(datetime.fromisoformat(watermark) if watermark else None, raw.get("first_bucket"),
                   int(raw.get("expired_before") or 0), bool(raw.get("dirty")))  # fmt: skip


@dataclass
class AnalyticsState:
    """What the runner keeps between runs (and reloads from Cassandra after a restart)."""

    epoch: str = ""
    progress: Progress = field(default_factory=Progress)
    totals: dict[AggregateKey, Aggregate] = field(default_factory=dict)
    # What the totals' min and max become when their buckets leave the retention.
    extremes: dict[AggregateKey, SlidingExtremes] = field(default_factory=dict)
    recent: dict[int, BucketAggregates] = field(default_factory=dict)
    # (changed_at ms, bucket ms) of the change marks already processed within the overlap
    seen_marks: set[tuple[int, int]] = field(default_factory=set)
    # No trace was ever counted: every trace of a run is new (the first, full run skips the lookup).
    nothing_counted: bool = False


def aggregate_from_row(row: Any) -> Aggregate:
    return Aggregate(count=row.count or 0, errors=row.errors or 0, sum_us=row.sum_us or 0, min_us=row.min_us,
                     max_us=row.max_us, n4xx=row.n4xx or 0, n5xx=row.n5xx or 0, first_us=row.first_us,
                     last_us=row.last_us, bins=dict(row.bins or {}), request_bytes=row.request_bytes or 0,
                     response_bytes=row.response_bytes or 0)  # fmt: skip


def aggregate_values(agg: Aggregate) -> tuple[Any, ...]:
    return (agg.count, agg.errors, agg.sum_us, agg.min_us, agg.max_us, agg.n4xx, agg.n5xx, agg.first_us,
            agg.last_us, agg.bins, agg.request_bytes, agg.response_bytes)  # fmt: skip


class StateStore:
    """Reads and writes the analytics' tables through one driver session on the keyspace."""

    def __init__(self, db: Any):
        self.db = db
        prepare = db.prepare
        self.insert_bucket = prepare(
            f"INSERT INTO aggregates_by_bucket (bucket, kind, key, {AGGREGATE_COLUMNS}) VALUES ({_marks(15)})"
        )
        self.insert_total = prepare(
            f"INSERT INTO aggregates_by_key (kind, key, {AGGREGATE_COLUMNS}, low_buckets, high_buckets)"
            f" VALUES ({_marks(16)})"
        )
        self.delete_total = prepare("DELETE FROM aggregates_by_key WHERE kind = ? AND key = ?")
        self.put = prepare("INSERT INTO analytics_state (name, value) VALUES (?, ?)")

    def read(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM analytics_state WHERE name = %s", (name,)).one()
        return None if row is None else str(row.value)

    def epoch(self) -> str | None:
        return self.read("epoch")

    def load(self, window_buckets: list[int], retention_start: int) -> AnalyticsState:
        """The state as the last finished run left it; derived rows of another model or of a run
        that did not finish are discarded first (the retention's buckets are then recomputed)."""
        epoch = self.read("epoch")
        if epoch is None:
            epoch = uuid.uuid4().hex
            self.db.execute(self.put, ("epoch", epoch))
        progress = Progress.from_json(self.read("progress"))
        model = self.read("model")
        if model != MODEL or progress.dirty:
            why = "a run did not finish" if progress.dirty else f"the aggregates are of model {model!r}"
            log.warning("%s: discarding the derived state, recomputing from the spans", why)
            progress = self.reset(retention_start)
        rows = list(self.db.execute(f"SELECT kind, key, {AGGREGATE_COLUMNS}, low_buckets, high_buckets"
                                    " FROM aggregates_by_key"))  # fmt: skip
        state = AnalyticsState(
            epoch=epoch,
            progress=progress,
            totals={(r.kind, tuple(r.key)): aggregate_from_row(r) for r in rows},
            extremes={(r.kind, tuple(r.key)): _extremes_from_row(r) for r in rows},
            recent=self.read_buckets(window_buckets),
            nothing_counted=self.db.execute("SELECT traceid FROM counted_traces LIMIT 1").one() is None,
        )
        log.info("state loaded: %d totals, watermark %s", len(state.totals), progress.watermark)
        return state

    def reset(self, retention_start: int) -> Progress:
        """Empty the derived tables; the next run recomputes every retained bucket."""
        schema.truncate(self.db, DERIVED_TABLES)
        progress = Progress(expired_before=retention_start)
        self.db.execute(self.put, ("progress", progress.to_json()))
        self.db.execute(self.put, ("model", MODEL))
        return progress

    def read_buckets(self, buckets: list[int]) -> dict[int, BucketAggregates]:
        found: dict[int, BucketAggregates] = {}
        query = f"SELECT bucket, kind, key, {AGGREGATE_COLUMNS} FROM aggregates_by_bucket WHERE bucket IN %s"
        for row in select_by_buckets(self.db, query, buckets):
            found.setdefault(datetime_to_ms(row.bucket), {})[(row.kind, tuple(row.key))] = aggregate_from_row(row)
        return found

    def begin(self, progress: Progress) -> None:
        """Mark a run's writes as under way (before the first of them)."""
        self.db.execute(self.put, ("progress", Progress(progress.watermark, progress.first_bucket,
                                                        progress.expired_before, dirty=True).to_json()))  # fmt: skip

    def commit(self, progress: Progress) -> None:
        """The run's last write: its progress, and the end of its writes."""
        progress.dirty = False
        self.db.execute(self.put, ("progress", progress.to_json()))

    def write_buckets(self, rows: Iterable[tuple[int, AggregateKey, Aggregate]]) -> None:
        self._execute(self.insert_bucket, [(ms_to_datetime(b), kind, list(key), *aggregate_values(agg))
                                           for b, (kind, key), agg in rows])  # fmt: skip

    def write_totals(self, totals: Iterable[tuple[AggregateKey, Aggregate, SlidingExtremes]]) -> None:
        self._execute(self.insert_total, [(kind, list(key), *aggregate_values(agg), ext.lows, ext.highs)
                                          for (kind, key), agg, ext in totals])  # fmt: skip

    def delete_totals(self, gone: Iterable[AggregateKey]) -> None:
        self._execute(self.delete_total, [(kind, list(key)) for kind, key in gone])

    def _execute(self, statement: Any, rows: list[tuple[Any, ...]]) -> None:
        results = execute_concurrent_with_args(self.db, statement, rows, concurrency=64)
        failed = [r for r in results if not r.success]
        if failed:
            raise RuntimeError(f"writing analytics state failed: {failed[0].result_or_exc}")


def select_by_buckets(db: Any, query: str, buckets: list[int]) -> Iterator[Any]:
    """The rows of ``query`` (one ``bucket IN %s`` parameter) for ``buckets``, 100 partitions at a time."""
    for start in range(0, len(buckets), 100):
        chunk = [ms_to_datetime(b) for b in buckets[start : start + 100]]
        yield from db.execute(query, (ValueSequence(chunk),))


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _extremes_from_row(row: Any) -> SlidingExtremes:
    return SlidingExtremes(lows=dict(row.low_buckets or {}), highs=dict(row.high_buckets or {}))
