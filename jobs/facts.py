"""Spans -> partial aggregates per (bucket, kind, key), in Spark: the analytics' one aggregation.

``span_facts`` derives from each stored span what the kinds (jobs/kinds.py) key on and what
decides whether it is a request of its service:

* **the side** of the call: the span kind the producer recorded (``server``, ``client``, ...);
  for a span stored before kinds were recorded, Envoy's rule (an ``outbound|...`` upstream
  cluster is the caller's side);
* **a request**: a server-side span with an HTTP status or a gRPC status;
* **an error**: HTTP status >= 400, or a gRPC status other than 0 (OK);
* **the target**: the URL's path and query (``http://10.177.0.10:9180/x?y`` and ``/x?y`` are one
  URL; the host is a column of its own), or ``/<service>/<method>`` for a gRPC call, its HTTP/2
  ``:path``.

``bucket_facts`` then turns one read of spans into one row per (bucket, kind, key) with the
mergeable aggregate of jobs/aggregates.py (counts, sums, min/max, first/last start, sketch bins),
and ``fold_facts`` collects those rows into Python.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs import kinds
from jobs.aggregates import LOG_GAMMA, ZERO_BIN, Aggregate
from jobs.kinds import AggregateKey

SPAN_COLUMNS = (
    "bucket", "traceid", "service", "source", "span_kind", "node_id", "operation_name", "http_url", "user_agent",
    "status_code", "grpc_status", "upstream_cluster", "duration_us", "start_time", "request_size", "response_size",
)  # fmt: skip

BucketAggregates = dict[AggregateKey, Aggregate]


def url_target(url: Column) -> Column:
    """The path and query of a URL, absolute (``scheme://host/...``) or not; null for no URL."""
    without_authority = F.regexp_replace(url, r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*", "")
    path_and_query = F.regexp_replace(without_authority, "#.*$", "")
    return F.when(url.isNull() | (url == ""), F.lit(None)).when(path_and_query == "", "/").otherwise(path_and_query)


def is_request() -> Column:
    """Whether a stored span is a request its service answered: server side, with a status."""
    span_kind, upstream = F.col("span_kind"), F.col("upstream_cluster")
    envoy_server_side = upstream.isNull() | ~upstream.startswith("outbound")
    server_side = F.when(span_kind.isNull() | (span_kind == ""), envoy_server_side).otherwise(span_kind == "server")
    return server_side & (F.col("status_code").isNotNull() | F.col("grpc_status").isNotNull())


def span_facts(spans: DataFrame) -> DataFrame:
    """The stored spans with what the aggregate keys are made of and what makes a request; the
    ``caller`` is jobs/graph.py's column, null when the spans come without it."""
    status, grpc = F.col("status_code"), F.col("grpc_status")
    operation = F.col("operation_name")
    grpc_target = F.when(grpc.isNotNull(), F.when(operation.startswith("/"), operation).otherwise(
        F.concat(F.lit("/"), operation)))  # fmt: skip
    return spans.select(
        F.unix_millis("bucket").alias("bucket_ms"),
        "duration_us",
        "request_size",
        "response_size",
        F.unix_micros("start_time").alias("start_us"),
        "service",
        F.coalesce(F.col("source"), F.lit("unknown")).alias("source"),
        "node_id",
        "operation_name",
        "http_url",
        "user_agent",
        "upstream_cluster",
        status.cast("string").alias("status"),
        F.coalesce(url_target(F.col("http_url")), grpc_target).alias("target"),
        is_request().alias("is_request"),
        F.coalesce((status >= 400) | (grpc != 0), F.lit(False)).alias("is_error"),
        status.alias("status_code"),
        (F.col("caller") if "caller" in spans.columns else F.lit(None).cast("string")).alias("caller"),
    ).withColumns({
        "edge_target": F.coalesce(F.col("target"), F.lit(kinds.NONE)),
        "edge_status": F.coalesce(F.col("status"), F.lit(kinds.NONE)),
    })  # fmt: skip


def _key(kind: kinds.Kind) -> Column:
    """The kind's key of a span fact: null when a part is missing or the span does not count."""
    parts = [F.col(p) for p in kind.parts]
    present = F.lit(True)
    for part in parts:
        present = present & part.isNotNull()
    if kind.requests:
        present = present & F.col("is_request")
    return F.when(present, F.array(*parts).cast("array<string>") if parts else F.array().cast("array<string>"))


def bucket_facts(spans: DataFrame) -> DataFrame:
    """One row per (bucket, kind, key) with the partial aggregate of its spans: of every kind, and
    with a ``caller`` column (jobs/graph.py ``with_callers``) also of the graph's."""

    def entries_of(chosen: tuple[kinds.Kind, ...]) -> Column:
        return F.array(*[F.struct(F.lit(k.name).alias("kind"), _key(k).alias("key")) for k in chosen])

    # With a caller column a request also counts into the graph's details: their keys hold the
    # caller, null for a span without one.
    entries = entries_of(kinds.SPAN_KINDS + ((kinds.EDGE_DETAIL,) if "caller" in spans.columns else ()))
    duration, status = F.col("duration_us"), F.col("status_code")
    sketch_bin = F.when(duration > 0, F.ceil(F.log(duration) / F.lit(LOG_GAMMA))).otherwise(F.lit(ZERO_BIN))
    facts = (
        span_facts(spans)
        .select(
            "bucket_ms",
            duration,
            status,
            "request_size",
            "response_size",
            "start_us",
            "is_error",
            sketch_bin.cast("int").alias("bin"),
            F.explode(entries).alias("e"),
        )
        .where(F.col("e.key").isNotNull())
    )
    timed = F.col("e.kind").isin(*[k.name for k in (*kinds.SPAN_KINDS, kinds.EDGE_DETAIL) if k.requests])

    def when_timed(value: Column) -> Column:
        return F.when(timed, value)

    def counted_when(condition: Column) -> Column:
        return F.sum(F.when(timed & condition, 1).otherwise(0))

    per_bin = facts.groupBy("bucket_ms", F.col("e.kind").alias("kind"), F.col("e.key").alias("key"),
                            when_timed(F.col("bin")).alias("bin")).agg(
        F.count(F.lit(1)).alias("count"),
        counted_when(F.col("is_error")).alias("errors"),
        F.sum(when_timed(duration)).alias("sum_us"),
        F.min(when_timed(duration)).alias("min_us"),
        F.max(when_timed(duration)).alias("max_us"),
        counted_when((status >= 400) & (status < 500)).alias("n4xx"),
        counted_when(status >= 500).alias("n5xx"),
        F.sum(when_timed(F.col("request_size"))).alias("request_bytes"),
        F.sum(when_timed(F.col("response_size"))).alias("response_bytes"),
        F.min(when_timed(F.col("start_us"))).alias("first_us"),
        F.max(when_timed(F.col("start_us"))).alias("last_us"),
    )  # fmt: skip
    # One row per (bucket, kind, key): the sketch becomes a map of bin -> count.
    return per_bin.groupBy("bucket_ms", "kind", "key").agg(
        F.sum("count").alias("count"),
        F.sum("errors").alias("errors"),
        F.sum("sum_us").alias("sum_us"),
        F.min("min_us").alias("min_us"),
        F.max("max_us").alias("max_us"),
        F.sum("n4xx").alias("n4xx"),
        F.sum("n5xx").alias("n5xx"),
        F.sum("request_bytes").alias("request_bytes"),
        F.sum("response_bytes").alias("response_bytes"),
        F.min("first_us").alias("first_us"),
        F.max("last_us").alias("last_us"),
        F.map_from_entries(F.collect_list(F.when(F.col("bin").isNotNull(), F.struct("bin", "count")))).alias("bins"),
    )


def fold_facts(rows: Iterable[Any]) -> dict[int, BucketAggregates]:
    """The (bucket, kind, key) rows as one Aggregate per key, grouped by bucket; the graph's
    details merged into its kinds."""
    buckets: dict[int, BucketAggregates] = defaultdict(dict)
    for row in rows:
        buckets[row["bucket_ms"]][(row["kind"], tuple(row["key"]))] = Aggregate(
            count=row["count"],
            errors=row["errors"],
            sum_us=row["sum_us"] or 0,
            min_us=row["min_us"],
            max_us=row["max_us"],
            n4xx=row["n4xx"],
            n5xx=row["n5xx"],
            request_bytes=row["request_bytes"] or 0,
            response_bytes=row["response_bytes"] or 0,
            first_us=row["first_us"],
            last_us=row["last_us"],
            bins=dict(row["bins"] or {}),
        )
    for aggregates in buckets.values():
        _merge_edge_details(aggregates)
    return buckets


def _merge_edge_details(aggregates: BucketAggregates) -> None:
    """Replace the EDGE_DETAIL aggregates by their merges into EDGE, EDGE_URL and EDGE_STATUS."""
    details = [key for key in aggregates if key[0] == kinds.EDGE_DETAIL.name]
    for key in details:
        detail = aggregates.pop(key)
        caller, service, source, target, status = key[1]
        merged_into = [kinds.EDGE.key(caller, service, source)]
        if target != kinds.NONE:
            merged_into.append(kinds.EDGE_URL.key(caller, service, source, target))
        if status != kinds.NONE:
            merged_into.append(kinds.EDGE_STATUS.key(caller, service, source, status))
        for merged in merged_into:
            aggregates.setdefault(merged, Aggregate()).add(detail)
